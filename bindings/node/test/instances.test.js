'use strict'
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { zixiao, stateDir, fakeController, container } = require('./helpers')

test('create, converge, stop, start and delete an instance', async () => {
  const controller = await fakeController()
  const created = await controller.createInstance(container('web', { command: ['echo', 'hi'] }))
  assert.equal(created.name, 'web')
  assert.equal(created.status, 'pending')
  assert.deepEqual(created.spec.command, ['echo', 'hi'])

  const running = await controller.converge('web')
  assert.equal(running.status, 'running')
  assert.equal(running.node, 'local')
  assert.deepEqual((await controller.listInstances()).map((i) => i.name), ['web'])
  assert.deepEqual(await controller.listInstances({ status: 'stopped' }), [])

  await controller.stopInstance('web')
  assert.equal((await controller.converge('web')).status, 'stopped')

  await controller.startInstance(created.id)
  assert.equal((await controller.converge(created.id)).status, 'running')

  assert.equal((await controller.deleteInstance('web')).desired, 'deleted')
  assert.equal(await controller.converge('web'), null)
  assert.deepEqual(await controller.listInstances(), [])
})

test('pause, resume, stats and console output', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  await controller.converge('web')
  assert.equal((await controller.pauseInstance('web')).status, 'paused')
  assert.equal((await controller.resumeInstance('web')).status, 'running')

  const stats = await controller.instanceStats('web')
  assert.equal(typeof stats.cpu_time_ns, 'number')

  const log = await controller.logs('web')
  const chunk = await log.read()
  assert.equal(chunk.data.toString(), 'started web\n')
  assert.equal(chunk.nextOffset, chunk.data.length)
  assert.equal((await log.read(chunk.nextOffset)).data.length, 0)
  assert.equal(await log.isRunning(), true)
})

test('nodes and cluster info', async () => {
  const controller = await fakeController()
  const nodes = await controller.listNodes()
  assert.deepEqual(nodes.map((n) => n.id), ['local'])
  assert.deepEqual([...nodes[0].runtimes].sort(), ['container', 'microvm', 'vm'])
  assert.equal((await controller.getNode('local')).status, 'ready')

  await controller.createInstance(container('a'))
  await controller.createInstance(container('b'))
  await Promise.all([controller.converge('a'), controller.converge('b')])
  const info = await controller.clusterInfo()
  assert.equal(info.nodes, 1)
  assert.equal(info.instances, 2)
  assert.deepEqual(info.instances_by_type, { container: { running: 2 } })
  assert.equal((await controller.cordonNode('local')).status, 'cordoned')
  assert.equal((await controller.uncordonNode('local')).status, 'ready')
})

test('the embedded controller registers this machine', async () => {
  const controller = await zixiao.Controller.open(stateDir())
  const nodes = await controller.listNodes()
  assert.equal(nodes.length, 1)
  assert.ok(nodes[0].capacity.cpus >= 1)
  assert.equal(nodes[0].status, 'ready')
  assert.equal((await controller.clusterInfo()).instances, 0)
})
