// Networks from Node: create one, put a container on it, read its address,
// and clean up. On a machine where Zixiao may not set up bridges (no root,
// no nftables) creating the network says why.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Controller } = require('zixiao')

async function main() {
  const controller = await Controller.open(fs.mkdtempSync(path.join(os.tmpdir(), 'zixiao-')))

  let lan
  try {
    lan = await controller.createNetwork({ name: 'lan', subnets: ['10.77.0.0/24'] })
  } catch (err) {
    if (err.code !== 'unsupported') throw err
    console.log(`cannot set up networks here: ${err.message}`)
    return
  }
  console.log(`network ${lan.name}: bridge ${lan.bridge}, gateway ${lan.subnets[0].gateway}`)

  await controller
    .createNetwork({ name: 'wide', subnets: ['10.77.0.0/16'] })
    .catch((err) => console.log(`rejected ${err.field} (${err.code}): ${err.message}`))

  try {
    const web = await controller.createInstance({
      name: 'web',
      spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 64, networks: ['lan'] },
    })
    for (const attachment of web.attachments ?? []) {
      const addresses = attachment.addresses.map((a) => `${a.address}/${a.prefix_len}`).join(', ')
      console.log(`${web.name} ${attachment.interface} on ${attachment.network}: ${addresses} (mac ${attachment.mac})`)
    }
    await controller
      .deleteNetwork('lan')
      .catch((err) => console.log(`not yet (${err.code}): ${err.message}`))
    await controller.deleteInstance('web') // resolves once it is gone
  } catch (err) {
    if (err.code !== 'unsupported') throw err // no container runtime on this machine
    console.log(`cannot run a container here: ${err.message}`)
  } finally {
    // The network is a real bridge on this machine: remove it.
    await controller.deleteNetwork('lan')
  }
  console.log('networks left:', (await controller.listNetworks()).map((n) => n.name))
}

main()
