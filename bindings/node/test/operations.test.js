'use strict'
// Operations from Node on the fake runtimes: a create without waiting names
// its operation, which waitOperation follows to success; lists, cancels, and
// bad ids or cancels rejected with their kind, nothing changed.
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

test('a create without waiting is followed to success', async () => {
  const controller = await fakeController()
  const created = await controller.createInstance(container('web'), { wait: false })
  assert.match(created.operation, /^op-[0-9a-f]{32}$/)
  const running = await controller.getOperation(created.operation)
  assert.equal(running.phase, 'running')
  const ended = await controller.waitOperation(created.operation, 30000)
  assert.equal(ended.phase, 'succeeded')
  assert.equal(ended.result, created.id)
  assert.equal((await controller.getInstance('web')).status, 'running')
  const kept = await controller.listOperations({ target: 'web', kind: 'create' })
  assert.deepEqual(kept.map((o) => o.id), [created.operation])
  assert.deepEqual(await controller.listOperations({ unfinished: true }), [])
})

test('a running create is cancelled', async () => {
  const controller = await fakeController()
  const created = await controller.createInstance(container('web'), { wait: false })
  const cancelled = await controller.cancelOperation(created.operation)
  assert.equal(cancelled.phase, 'cancelled')
  assert.match(cancelled.error.message, /deleted/)
})

test('bad ids and cancels reject and change nothing', async () => {
  const controller = await fakeController()
  const created = await controller.createInstance(container('web'))
  const before = await controller.getOperation(created.operation)
  await assert.rejects(controller.cancelOperation(created.operation), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /succeeded/)
    return true
  })
  assert.deepEqual(await controller.getOperation(created.operation), before)
  await assert.rejects(controller.getOperation('op-' + '0'.repeat(32)), { code: 'not_found' })
  await assert.rejects(controller.getOperation('../instances/web'), {
    code: 'invalid_argument',
    field: 'operation',
  })
  await assert.rejects(controller.listOperations({ kind: 'teleport' }), {
    code: 'invalid_argument',
  })
})
