// Images, a console and a followed log on containerd.
//
//   node containers.js IMAGE.tar [STATE_DIR]
//
// IMAGE.tar holds busybox (scripts/images/busybox-oci.sh builds one);
// containerd is found as the CLI finds it (ZIXIAO_CONTAINERD_SOCKET).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Controller } = require('zixiao')

async function main() {
  const [archive, state] = process.argv.slice(2)
  const controller = await Controller.open(state ?? fs.mkdtempSync(path.join(os.tmpdir(), 'zx-')))

  const images = await controller.importImages(archive, {
    progress: ({ done, total }) => process.stdout.write(`\rimporting ${Math.floor((done * 100) / Math.max(total, 1))}%`),
  })
  console.log('\nimported', images.map((i) => i.name))

  await controller.createInstance({
    name: 'cat',
    labels: { 'zixiao.io/stdin': 'true' },
    spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 32, command: ['cat'] },
  })
  const tty = await controller.attachConsole('cat')
  await tty.write('hello from node\n')
  console.log('console:', (await tty.read()).toString().trim())
  await tty.close()
  const stats = await controller.instanceStats('cat')
  console.log(`cat uses ${stats.memory_bytes} bytes of ${stats.memory_limit_bytes}`)

  await controller.createInstance({
    name: 'count',
    spec: {
      type: 'container',
      image: 'busybox',
      cpus: 1,
      memory_mib: 32,
      command: ['sh', '-c', 'for i in 1 2 3; do echo $i; sleep 1; done'],
    },
  })
  for await (const piece of await controller.followLog('count')) {
    console.log('count says', piece.toString().trim())
  }

  for (const name of ['cat', 'count']) await controller.deleteInstance(name)
  for (const image of images) await controller.removeImage(image.name)
}

main()
