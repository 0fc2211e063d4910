// Node maintenance, a watch of node changes and a backup of the state.
//
//   node nodes.js [STATE_DIR]
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Controller } = require('zixiao')

async function main() {
  const state = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'zx-'))
  const controller = await Controller.open(state)
  const [node] = await controller.listNodes()

  const watch = await controller.watchNodes() // from now
  ;(async () => {
    for await (const event of watch) console.log(`  node ${event.id} ${event.kind}: ${event.node.status}`)
  })()

  const report = await controller.setMaintenance(node.id, true)
  console.log(`maintenance on: stopped ${report.stopped}, moved ${report.moved}`)
  await controller.setMaintenance(node.id, false)

  const summary = await controller.backupState(path.join(state, 'backup.redb'))
  console.log(`backed up ${summary.keys} keys at revision ${summary.revision}`)
  process.exit(0) // the watch would wait for more changes
}

main()
