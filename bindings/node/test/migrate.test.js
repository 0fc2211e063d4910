'use strict'
// migrateInstance through the binding: the embedded deployment has one
// node, so a migration is rejected saying so, and bad input rejects with
// its kind; nothing changes. (Moves between agents are tested with real
// runtimes in cli/tests/cluster.rs.)
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

test('one node has nowhere to migrate to, and bad input rejects', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  const before = await controller.getInstance('web')
  await assert.rejects(controller.migrateInstance('web', { mode: 'restart' }), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /no other node to migrate instance `web` to/)
    return true
  })
  await assert.rejects(controller.migrateInstance('nope'), { code: 'not_found' })
  await assert.rejects(controller.migrateInstance('web', { mode: 'teleport' }), {
    code: 'invalid_argument',
    field: 'mode',
  })
  assert.deepEqual(await controller.getInstance('web'), before)
})
