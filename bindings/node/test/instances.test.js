'use strict'
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { zixiao, stateDir, fakeController, container } = require('./helpers')

test('create, stop, start, restart and delete an instance, waiting for each', async () => {
  const controller = await fakeController()
  const running = await controller.createInstance(container('web', { command: ['echo', 'hi'] }))
  assert.equal(running.name, 'web')
  assert.equal(running.status, 'running')
  assert.equal(running.node, 'local')
  assert.deepEqual(running.spec.command, ['echo', 'hi'])
  assert.deepEqual((await controller.listInstances()).map((i) => i.name), ['web'])
  assert.deepEqual(await controller.listInstances({ status: 'stopped' }), [])

  assert.equal((await controller.stopInstance('web')).status, 'stopped')
  assert.equal((await controller.startInstance(running.id)).status, 'running')
  assert.equal((await controller.restartInstance('web')).status, 'running')
  assert.equal(await controller.deleteInstance('web'), null)
  assert.deepEqual(await controller.listInstances(), [])
})

test('without wait a call resolves with the intent stored', async () => {
  const controller = await fakeController()
  const stored = await controller.createInstance(container('web'), { wait: false })
  // Placed on a node in the create's own commit; nothing runs it yet.
  assert.equal(stored.status, 'scheduled')
  // Reads never write; a call that waits converges it.
  assert.equal((await controller.getInstance('web')).status, 'scheduled')
  assert.equal((await controller.startInstance('web')).status, 'running')
  assert.equal((await controller.deleteInstance('web', { wait: false })).desired, 'deleted')
  assert.equal(await controller.deleteInstance('web'), null)
})

test('pause, resume, stats and the log', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  assert.equal((await controller.pauseInstance('web')).status, 'paused')
  assert.equal((await controller.resumeInstance('web')).status, 'running')

  const stats = await controller.instanceStats('web')
  assert.equal(typeof stats.cpu_time_ns, 'number')
  // Only a server keeps a history; this deployment has no daemon.
  await assert.rejects(controller.instanceStatsHistory('web'), (err) =>
    err.code === 'unsupported' && /a server keeps one/.test(err.message))
  await assert.rejects(controller.instanceStatsHistory('nope'), (err) => err.code === 'not_found')
  const [node] = await controller.listNodes()
  await assert.rejects(controller.nodeStatsHistory(node.id), (err) =>
    err.code === 'unsupported' && /a server keeps one/.test(err.message))
  await assert.rejects(controller.nodeStatsHistory('no-such-node'), (err) => err.code === 'not_found')

  const chunk = await controller.readLog('web')
  assert.equal(chunk.data.toString(), 'started web\n')
  assert.equal(chunk.nextOffset, chunk.data.length)
  assert.equal((await controller.readLog('web', chunk.nextOffset)).data.length, 0)
  assert.equal((await controller.readLog('web', 0, 7)).data.toString(), 'started')
})

test('following a log ends when the instance stops', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  await controller.stopInstance('web')
  const pieces = []
  for await (const piece of await controller.followLog('web')) pieces.push(piece)
  assert.equal(Buffer.concat(pieces).toString(), 'started web\n')
  const tail = []
  for await (const piece of await controller.followLog('web', 8)) tail.push(piece)
  assert.equal(Buffer.concat(tail).toString(), 'web\n')
})

test('nodes: cluster info, cordon, maintenance, watch and deregister', async () => {
  const controller = await fakeController()
  const nodes = await controller.listNodes()
  assert.deepEqual(nodes.map((n) => n.id), ['local'])
  assert.deepEqual([...nodes[0].runtimes].sort(), ['container', 'microvm', 'vm'])
  assert.equal((await controller.getNode('local')).status, 'ready')

  await Promise.all([controller.createInstance(container('a')), controller.createInstance(container('b'))])
  const info = await controller.clusterInfo()
  assert.equal(info.nodes, 1)
  assert.equal(info.instances, 2)
  assert.deepEqual(info.instances_by_type, { container: { running: 2 } })

  const watch = await controller.watchNodes()
  assert.equal((await controller.cordonNode('local')).status, 'cordoned')
  const { value: event } = await watch[Symbol.asyncIterator]().next()
  assert.equal(event.kind, 'modified')
  assert.equal(event.node.status, 'cordoned')
  assert.equal((await controller.uncordonNode('local')).status, 'ready')

  const report = await controller.setMaintenance('local', true)
  assert.equal(report.status, 'maintenance')
  assert.equal((await controller.setMaintenance('local', false)).status, 'ready')

  await assert.rejects(controller.deregisterNode('local'), { code: 'failed_precondition' })
  await controller.deleteInstance('a')
  await controller.deleteInstance('b')
  await controller.deregisterNode('local')
  assert.deepEqual(await controller.listNodes(), [])
})

test('a state backup is written and checked; an existing file is refused', async () => {
  const fs = require('node:fs')
  const path = require('node:path')
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  const file = path.join(stateDir(), 'backup.redb')
  const summary = await controller.backupState(file)
  assert.ok(fs.statSync(file).size > 0)
  assert.ok(summary.keys >= 2)
  await assert.rejects(controller.backupState(file), { code: 'invalid_argument' })
})

test('the embedded deployment registers this machine', async () => {
  const controller = await zixiao.Controller.open(stateDir())
  const nodes = await controller.listNodes()
  assert.equal(nodes.length, 1)
  assert.ok(nodes[0].capacity.cpus >= 1)
  assert.equal(nodes[0].status, 'ready')
  assert.equal((await controller.clusterInfo()).instances, 0)
})

test('a list comes in pages on request', async () => {
  const controller = await fakeController()
  for (const name of ['c', 'a', 'b']) {
    await controller.createInstance(container(name), { wait: false })
  }
  const first = await controller.listInstancesPage(undefined, { size: 2 })
  assert.deepEqual(first.instances.map((i) => i.name), ['a', 'b'])
  const rest = await controller.listInstancesPage(undefined, { size: 2, token: first.next_page_token })
  assert.deepEqual(rest.instances.map((i) => i.name), ['c'])
  assert.equal(rest.next_page_token, undefined)
  // No size in-process: everything, one page.
  assert.equal((await controller.listInstancesPage()).instances.length, 3)
  await assert.rejects(controller.listInstancesPage(undefined, { token: '../etc' }), (e) => {
    assert.equal(e.code, 'invalid_argument')
    assert.match(e.message, /page_token/)
    return true
  })
})
