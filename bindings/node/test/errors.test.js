'use strict'
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { zixiao, stateDir, fakeController, container } = require('./helpers')

test('an invalid field rejects with invalid_argument naming it', async () => {
  const controller = await fakeController()
  await assert.rejects(controller.createInstance(container('web', { memory_mib: 1 })), (err) => {
    assert.ok(err instanceof Error)
    assert.equal(err.code, 'invalid_argument')
    assert.equal(err.field, 'spec.memory_mib')
    assert.match(err.message, /spec\.memory_mib/)
    return true
  })
  assert.deepEqual(await controller.listInstances(), [])
})

test('a wrongly typed or unknown field is named', async () => {
  const controller = await fakeController()
  await assert.rejects(controller.createInstance(container('web', { cpus: 'two' })), {
    code: 'invalid_argument',
    field: 'spec.cpus',
  })
  await assert.rejects(controller.createInstance(container('web', { type: 'jail' })), {
    code: 'invalid_argument',
    field: 'spec.type',
  })
  await assert.rejects(controller.createInstance(container('Not A DNS Label')), {
    code: 'invalid_argument',
    field: 'name',
  })
  await assert.rejects(controller.listInstances({ status: 'sleepy' }), {
    code: 'invalid_argument',
    field: 'filter.status',
  })
})

test('not_found, already_exists and failed_precondition', async () => {
  const controller = await fakeController()
  await assert.rejects(controller.getInstance('ghost'), (err) => {
    assert.equal(err.code, 'not_found')
    assert.match(err.message, /ghost/)
    return true
  })
  await assert.rejects(controller.getNode('ghost'), { code: 'not_found' })
  await controller.createInstance(container('web'))
  await assert.rejects(controller.createInstance(container('web')), { code: 'already_exists' })
  await controller.stopInstance('web')
  await assert.rejects(controller.pauseInstance('web'), { code: 'failed_precondition' })
})

test('what the fake runtime cannot do rejects with unsupported and the reason', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  for (const call of [
    () => controller.createSnapshot('web', 's1'),
    () => controller.listSnapshots('web'),
    () => controller.attachConsole('web'),
    () => controller.listImages(),
    () => controller.importImages('/nonexistent.tar', { progress: () => {} }),
  ]) {
    await assert.rejects(call(), (err) => {
      assert.equal(err.code, 'unsupported')
      assert.ok(err.message.length > 0)
      return true
    })
  }
  await assert.rejects(controller.listImages({ instanceType: 'jail' }), {
    code: 'invalid_argument',
    field: 'instanceType',
  })
})

test('a server nobody answers for is unavailable, naming it, on the first call', async () => {
  const controller = await zixiao.connect('http://127.0.0.1:7400')
  await assert.rejects(controller.listNodes(), (err) => {
    assert.equal(err.code, 'unavailable')
    assert.match(err.message, /127\.0\.0\.1:7400/)
    return true
  })
})

test('one process per state directory, and the cause is kept', async () => {
  const dir = stateDir()
  const first = await zixiao.Controller._openWithFakeRuntimes(dir)
  await assert.rejects(zixiao.Controller._openWithFakeRuntimes(dir), (err) => {
    assert.equal(err.code, 'unavailable')
    assert.ok(err.cause instanceof Error, 'the store error is kept as the cause')
    return true
  })
  assert.equal((await first.listNodes()).length, 1)
})
