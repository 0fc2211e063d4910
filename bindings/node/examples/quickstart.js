const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Controller } = require('zixiao')

async function main() {
  // The embedded controller (the CLI's), over its own state directory.
  const controller = await Controller.open(fs.mkdtempSync(path.join(os.tmpdir(), 'zixiao-')))

  for (const node of await controller.listNodes()) {
    console.log(`node ${node.id}: ${node.capacity.cpus} cpus, runtimes ${JSON.stringify(node.runtimes)}`)
  }

  try {
    // Resolves once the instance has settled; { wait: false } answers at once.
    const web = await controller.createInstance({
      name: 'web',
      spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 64, command: ['echo', 'hi'] },
    })
    console.log(`${web.name} is ${web.status} on ${web.node}`)
  } catch (err) {
    if (err.code !== 'unsupported') throw err // no container runtime on this machine
    console.log(`cannot run it here: ${err.message}`)
  }

  await controller
    .createInstance({ name: 'tiny', spec: { type: 'container', cpus: 1, memory_mib: 1 } })
    .catch((err) => console.log(`rejected ${err.field} (${err.code}): ${err.message}`))

  console.log((await controller.clusterInfo()).instances, 'instance(s)')
}

main()
