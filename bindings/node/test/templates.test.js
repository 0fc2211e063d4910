'use strict'
// Templates: versions stay as stored, instances created from a version
// record it and are counted per version, a version in use is not deleted,
// and bad input rejects with its kind naming the field, with nothing
// created. On the fake-runtime controller.
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController } = require('./helpers')

function spec(memory_mib) {
  return {
    labels: { app: 'web' },
    spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib },
  }
}

function counts(template) {
  return template.versions.map((v) => [v.version, v.in_use, v.instances])
}

test('versions, counts and a refused delete', async () => {
  const controller = await fakeController()
  await controller.createTemplate('web', spec(64))
  const both = await controller.updateTemplate('web', spec(96))
  assert.deepEqual(both.versions.map((v) => v.spec.memory_mib), [64, 96])

  const a = await controller.createFromTemplate('a', 'web@1', ['cpus=2', 'labels.tier=front'])
  assert.equal(a.status, 'running')
  assert.deepEqual(a.template, { name: 'web', version: 1 })
  assert.equal(a.spec.cpus, 2)
  assert.deepEqual(a.labels, { app: 'web', tier: 'front' })
  const b = await controller.createFromTemplate('b', 'web', [], { wait: false })
  assert.equal(b.template.version, 2)
  assert.deepEqual((await controller.getInstance('a')).template, a.template)

  assert.deepEqual(counts(await controller.getTemplate('web')), [[1, 1, ['a']], [2, 1, ['b']]])
  assert.deepEqual(counts(await controller.getTemplate('web', 2)), [[2, 1, ['b']]])
  assert.deepEqual((await controller.listTemplates()).map((t) => t.name), ['web'])

  await assert.rejects(controller.deleteTemplate('web', 1), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /in use by a/)
    return true
  })
  await controller.deleteInstance('a')
  await controller.deleteTemplate('web', 1)
  assert.deepEqual(counts(await controller.getTemplate('web')), [[2, 1, ['b']]])
})

test('bad template input rejects by kind and creates nothing', async () => {
  const controller = await fakeController()
  const bad = spec(64)
  bad.spec.cpus = 0
  await assert.rejects(controller.createTemplate('web', bad), {
    code: 'invalid_argument',
    field: 'spec.cpus',
  })
  assert.deepEqual(await controller.listTemplates(), [])

  await controller.createTemplate('web', spec(64))
  await assert.rejects(controller.createFromTemplate('c', 'web', ['colour=red']), (e) => {
    assert.equal(e.code, 'invalid_argument')
    assert.equal(e.field, 'set')
    assert.match(e.message, /unknown field `colour`/)
    return true
  })
  await assert.rejects(controller.createFromTemplate('c', 'web@3'), { code: 'not_found' })
  await assert.rejects(controller.createTemplate('web', spec(96)), { code: 'already_exists' })
  assert.deepEqual(await controller.listInstances(), [])
})
