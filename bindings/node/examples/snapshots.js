// Snapshots of a microVM: take one, copy it out, start a second microVM
// from the copy, go back to it, delete it.
//
//   node snapshots.js KERNEL [STATE_DIR]
//
// KERNEL is a kernel the vmm backend boots (zixiao-vmm's test guest, for
// one); the zixiao-vmm monitor is found on $PATH or at ZIXIAO_VMM_BIN.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Controller } = require('zixiao')

async function main() {
  const [kernel, given] = process.argv.slice(2)
  const state = given ?? fs.mkdtempSync(path.join(os.tmpdir(), 'zx-'))
  const controller = await Controller.open(state)
  const spec = { type: 'microvm', kernel, cmdline: 'console=ttyS0 zx.mode=loop', cpus: 1, memory_mib: 64, backend: 'vmm' }
  console.log('vm1 is', (await controller.createInstance({ name: 'vm1', spec })).status)

  const taken = await controller.createSnapshot('vm1', 'first')
  console.log('took', taken.name, taken.includes_memory ? 'with memory' : 'disks only')
  const copy = path.join(state, 'vm1-first')
  await controller.exportSnapshot('vm1', 'first', copy)
  console.log('vm2 resumed from the copy:', (await controller.restoreInstance('vm2', copy)).status)

  await controller.revertSnapshot('vm1', 'first')
  console.log('snapshots of vm1:', (await controller.listSnapshots('vm1')).map((s) => s.name))
  await controller.deleteSnapshot('vm1', 'first')
  for (const name of ['vm1', 'vm2']) await controller.deleteInstance(name)
}

main()
