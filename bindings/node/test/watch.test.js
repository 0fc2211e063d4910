'use strict'
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

test('watch sees the whole lifecycle with for await', async () => {
  const controller = await fakeController()
  const watch = await controller.watchInstances() // from now
  await controller.createInstance(container('web'))
  await controller.deleteInstance('web')

  const events = []
  for await (const event of watch) {
    events.push(event)
    if (event.kind === 'deleted') break
  }
  assert.equal(events[0].kind, 'added')
  assert.equal(events[0].instance.status, 'scheduled') // placed as it is created
  assert.ok(events.some((e) => e.kind === 'modified' && e.instance.status === 'running'))
  const revisions = events.map((e) => e.revision)
  assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b))

  // A watch from a revision replays what came after it.
  const replay = []
  for await (const event of await controller.watchInstances(revisions[0])) {
    replay.push(event.revision)
    if (event.kind === 'deleted') break
  }
  assert.deepEqual(replay, revisions.slice(1))
})

test('a waiting watch does not block the event loop', async () => {
  // The watch waits off the loop: this very loop goes on to create the
  // instance whose event the watch is waiting for.
  const controller = await fakeController()
  const watch = await controller.watchInstances()
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
