'use strict'
// Node labels, traits and host aggregates: an instance that asks for a
// trait or an aggregate waits, naming it, until it is declared, and is then
// placed; operator labels are kept apart from the agent's; bad input
// rejects with its kind naming the field. On the fake-runtime controller.
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

function scheduled(instance) {
  return instance.conditions.find((c) => c.type === 'scheduled')
}

test('a declared trait and aggregate place the waiting instance', async () => {
  const controller = await fakeController()
  const node = (await controller.listNodes())[0].id
  const db = await controller.createInstance(
    container('db', { placement: { required_traits: ['ssd'] } }),
  )
  assert.equal(db.status, 'pending')
  assert.match(scheduled(db).message, /missing trait `ssd`/)

  const labelled = await controller.labelNode(node, ['disk=ssd', 'tier=front'])
  assert.deepEqual(labelled.operator.labels, { disk: 'ssd', tier: 'front' })
  assert.equal(labelled.labels.disk, 'ssd')
  const traits = await controller.addNodeTraits(node, ['ssd'])
  assert.deepEqual(traits.operator.traits, ['ssd'])
  const placed = await controller.getInstance('db')
  assert.equal(placed.status, 'running')
  assert.equal(placed.node, node)

  const web = await controller.createInstance(
    container('web', { placement: { aggregates: ['fast'] } }),
  )
  assert.match(scheduled(web).message, /aggregate `fast` does not exist/)
  const fast = await controller.createAggregate('fast', { tier: 'gold' })
  assert.deepEqual(fast.metadata, { tier: 'gold' })
  assert.deepEqual((await controller.addAggregateNode('fast', node)).nodes, [node])
  assert.equal((await controller.getInstance('web')).status, 'running')
  assert.deepEqual((await controller.listAggregates()).map((a) => a.name), ['fast'])
  assert.deepEqual((await controller.getAggregate('fast')).nodes, [node])
  const edited = await controller.setAggregateMetadata('fast', ['tier=silver', 'old-'])
  assert.deepEqual(edited.metadata, { tier: 'silver' })
  await assert.rejects(controller.setAggregateMetadata('fast', ['no key=v']), {
    code: 'invalid_argument',
    field: 'metadata',
  })

  await assert.rejects(controller.deleteAggregate('fast'), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.ok(e.message.includes(node), e.message)
    return true
  })
  assert.deepEqual((await controller.removeAggregateNode('fast', node)).nodes, [])
  await controller.deleteAggregate('fast')
  await controller.removeNodeTraits(node, ['ssd'])
  assert.equal((await controller.labelNode(node, ['disk-', 'tier-'])).operator, undefined)
})

test('bad node metadata rejects by kind naming the field', async () => {
  const controller = await fakeController()
  const node = (await controller.listNodes())[0].id
  await assert.rejects(controller.labelNode(node, ['no-equals-sign']), {
    code: 'invalid_argument',
    field: 'labels',
  })
  await assert.rejects(controller.addNodeTraits(node, ['has space']), {
    code: 'invalid_argument',
    field: 'traits',
  })
  await assert.rejects(controller.createAggregate('Fast'), {
    code: 'invalid_argument',
    field: 'name',
  })
  await assert.rejects(controller.createAggregate('fast', { 'bad key': 'v' }), {
    code: 'invalid_argument',
    field: 'metadata',
  })
  await assert.rejects(controller.createAggregate('fast', { tier: 7 }), {
    code: 'invalid_argument',
    field: 'metadata.tier',
  })
  await assert.rejects(controller.labelNode('no-such-node', ['a=b']), { code: 'not_found' })
  await controller.createAggregate('fast')
  await assert.rejects(controller.createAggregate('fast'), { code: 'already_exists' })
  await assert.rejects(controller.addAggregateNode('fast', 'no-such-node'), { code: 'not_found' })
})

test('a declared carbon intensity steers placement', async () => {
  const controller = await fakeController()
  const node = (await controller.listNodes())[0].id
  const dirty = await controller.setNodeCarbon(node, 300)
  assert.equal(dirty.carbon_intensity, 300)
  const green = await controller.createInstance(
    container('green', { placement: { carbon: { max_intensity: 200 } } }),
  )
  assert.match(scheduled(green).message, /carbon intensity above 200/)
  for (const bad of [-1, 9000]) {
    await assert.rejects(controller.setNodeCarbon(node, bad), {
      code: 'invalid_argument',
      field: 'carbon_intensity',
    })
  }
  assert.equal((await controller.getNode(node)).carbon_intensity, 300)
  await controller.setNodeCarbon(node, 120)
  assert.equal((await controller.getInstance('green')).status, 'running')
  assert.equal((await controller.setNodeCarbon(node, null)).operator, undefined)
  await assert.rejects(controller.setNodeCarbon('no-such-node', 100), { code: 'not_found' })
})

test('a decommissioned node takes nothing and is deleted once empty', async () => {
  const controller = await fakeController()
  const node = (await controller.listNodes())[0].id
  const stays = await controller.createInstance(container('stays', { restart: 'never' }))
  assert.equal(stays.status, 'running')

  const report = await controller.decommissionNode(node)
  assert.equal(report.status, 'decommissioned')
  assert.deepEqual(report.stopped, ['stays'])
  const retired = await controller.getNode(node)
  assert.deepEqual(retired.runtimes, [])
  assert.match(retired.missing_runtimes.container, /decommissioned/)
  await assert.rejects(controller.startInstance('stays'), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /decommissioned/)
    return true
  })
  await assert.rejects(controller.deregisterNode(node), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /stays/)
    return true
  })
  await controller.deleteInstance('stays')
  await controller.deregisterNode(node)
  await assert.rejects(controller.getNode(node), { code: 'not_found' })
})
