'use strict'
// updateInstance: sizes, labels and the restart policy on the fake runtimes
// (a container resizes live, a VM needs a restart), and bad input rejected
// with its kind and field, nothing changed.
const assert = require('node:assert/strict')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

test('a running container is resized and relabelled live', async () => {
  const controller = await fakeController()
  const web = await controller.createInstance(container('web'))
  const updated = await controller.updateInstance('web', {
    cpus: 2,
    memory_mib: 128,
    set_labels: { tier: 'front' },
    restart: 'on_failure',
  })
  assert.equal(updated.status, 'running')
  assert.equal(updated.spec.cpus, 2)
  assert.equal(updated.spec.memory_mib, 128)
  assert.equal(updated.spec.restart, 'on_failure')
  assert.deepEqual(updated.labels, { tier: 'front' })
  assert.equal(updated.started_at, web.started_at, 'resized live, not restarted')
  const removed = await controller.updateInstance('web', { remove_labels: ['tier'] })
  assert.deepEqual(removed.labels, {})
})

test('bad updates reject with their kind and change nothing', async () => {
  const controller = await fakeController()
  await controller.createInstance(container('web'))
  const before = await controller.getInstance('web')
  await assert.rejects(controller.updateInstance('nope', { cpus: 2 }), { code: 'not_found' })
  await assert.rejects(controller.updateInstance('web', { cpus: 0 }), {
    code: 'invalid_argument',
    field: 'cpus',
  })
  await assert.rejects(controller.updateInstance('web', {}), {
    code: 'invalid_argument',
    field: 'update',
  })
  await assert.rejects(controller.updateInstance('web', { memory_mib: 8 * 1024 * 1024 }), (e) => {
    assert.equal(e.code, 'resource_exhausted')
    assert.match(e.message, /MiB free, the update of `web` needs/)
    return true
  })
  assert.deepEqual(await controller.getInstance('web'), before)
})

test('a running vm restarts for a new size only when allowed', async () => {
  const controller = await fakeController()
  const vm = await controller.createInstance({
    name: 'vm1',
    spec: { type: 'vm', image: '/images/base.qcow2', cpus: 1, memory_mib: 256 },
  })
  await assert.rejects(controller.updateInstance('vm1', { memory_mib: 512 }), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /--restart-if-needed/)
    return true
  })
  const restarted = await controller.updateInstance('vm1', {
    memory_mib: 512,
    restart_if_needed: true,
  })
  assert.equal(restarted.status, 'running')
  assert.equal(restarted.spec.memory_mib, 512)
  assert.equal(restarted.restarts_done, vm.restarts_done + 1)
})

test('snapshot schedules are stored, checked, and refused where none can be taken', async () => {
  const controller = await fakeController()
  const schedule = { every: '1h', keep: 24 }
  const vm = await controller.createInstance({
    name: 'vm1',
    spec: {
      type: 'vm',
      image: '/images/base.qcow2',
      cpus: 1,
      memory_mib: 256,
      snapshot_schedule: schedule,
    },
  })
  assert.deepEqual(vm.spec.snapshot_schedule, schedule)
  await controller.createInstance(container('web'))
  const before = [await controller.getInstance('vm1'), await controller.getInstance('web')]
  await assert.rejects(
    controller.updateInstance('vm1', { snapshot_every: '30s', snapshot_keep: 2 }),
    (e) => {
      assert.equal(e.code, 'invalid_argument')
      assert.equal(e.field, 'snapshot_every')
      assert.match(e.message, /shorter than the minimum of 1m/)
      return true
    },
  )
  await assert.rejects(controller.updateInstance('vm1', { snapshot_keep: 0 }), {
    code: 'invalid_argument',
    field: 'snapshot_keep',
  })
  await assert.rejects(controller.updateInstance('nope', { snapshot_keep: 2 }), {
    code: 'not_found',
  })
  // Containers take no snapshots; nor does the fake VM runtime.
  for (const [name, says] of [['web', /containers cannot be snapshotted/], ['vm1', /snapshot/]]) {
    await assert.rejects(
      controller.updateInstance(name, { snapshot_every: '2h', snapshot_keep: 2 }),
      (e) => {
        assert.equal(e.code, 'unsupported')
        assert.match(e.message, says)
        return true
      },
    )
  }
  assert.deepEqual([await controller.getInstance('vm1'), await controller.getInstance('web')], before)
  const cleared = await controller.updateInstance('vm1', { clear_snapshot_schedule: true })
  assert.equal(cleared.spec.snapshot_schedule, undefined)
})

test('containers ask for fractions of a core; a node promises its cores times its ratio', async () => {
  const controller = await fakeController()
  const [node] = await controller.listNodes()
  assert.deepEqual(node.allocation_ratios, { cpu: 4, memory: 1 })
  const quarter = await controller.createInstance(container('quarter', { cpus: '250m', cpu_limit: 0.5 }))
  assert.equal(quarter.spec.cpus, 0.25)
  assert.equal(quarter.spec.cpu_limit, 0.5)
  const exact = await controller.setAllocationRatios(node.id, 1)
  assert.equal(exact.allocation_ratios.cpu, 1)
  const big = await controller.createInstance(container('big', { cpus: node.capacity.cpus }))
  assert.equal(big.status, 'pending')
  await controller.setAllocationRatios(node.id, 2, null)
  assert.equal((await controller.getInstance('big')).status, 'running')
  await assert.rejects(controller.createInstance(container('tiny', { cpus: 0.0001 })), {
    code: 'invalid_argument',
    field: 'spec.cpus',
  })
  await assert.rejects(controller.setAllocationRatios(node.id, null, 0), {
    code: 'invalid_argument',
    field: 'memory',
  })
})

test('a VM keeps its maximums; a container refuses them and a disk size', async () => {
  const controller = await fakeController()
  const vm = await controller.createInstance({
    name: 'vm1',
    spec: { type: 'vm', image: '/images/base.qcow2', cpus: 1, max_cpus: 2, memory_mib: 256, max_memory_mib: 512 },
  })
  assert.deepEqual([vm.spec.max_cpus, vm.spec.max_memory_mib], [2, 512])
  await assert.rejects(controller.createInstance(container('capped', { max_cpus: 2 })), {
    code: 'invalid_argument',
    field: 'spec.max_cpus',
  })
  await controller.createInstance(container('web'))
  const before = await controller.getInstance('web')
  await assert.rejects(controller.updateInstance('web', { disk_gib: 5 }), {
    code: 'invalid_argument',
    field: 'disk_gib',
  })
  assert.deepEqual(await controller.getInstance('web'), before)
})
