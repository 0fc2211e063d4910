'use strict'
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

test('watch sees the whole lifecycle with for await', async () => {
  const controller = await fakeController()
  const start = await controller.currentRevision()
  await controller.createInstance(container('web'))
  await controller.converge('web')
  await controller.deleteInstance('web')
  await controller.converge('web')

  const events = []
  for await (const event of await controller.watchInstances(start)) {
    events.push(event)
    if (event.kind === 'deleted') break
  }
  assert.equal(events[0].kind, 'added')
  assert.equal(events[0].instance.status, 'pending')
  assert.ok(events.some((e) => e.kind === 'modified' && e.instance.status === 'running'))
  const revisions = events.map((e) => e.revision)
  assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b))
  assert.ok(revisions[0] > start)
})

test('a waiting watch does not block the event loop', async () => {
  // The watch waits off the loop: this very loop goes on to create the
  // instance whose event the watch is waiting for.
  const controller = await fakeController()
  const watch = await controller.watchInstances(await controller.currentRevision())
  const next = watch[Symbol.asyncIterator]().next()
  let ticks = 0
  await new Promise((resolve) => setImmediate(() => { ticks += 1; resolve() }))
  assert.equal(ticks, 1)
  await controller.createInstance(container('web'))
  const { value, done } = await next
  assert.equal(done, false)
  assert.equal(value.kind, 'added')
  assert.equal(value.instance.name, 'web')
})
