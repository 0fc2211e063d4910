'use strict'
// migrateInstance through `connect()` against a real cluster of processes
// the test starts: a `zixiao server` and two `zixiao agent`s (the binary of
// server.test.js; ZIXIAO_BIN overrides it). A container restarts on the
// other node (its mode, restart, shown by the operation's steps: nothing
// copied); a VM, its agents on the two libvirtds (ZIXIAO_TEST_LIBVIRT_URI
// and ZIXIAO_TEST_LIBVIRT2_URI), migrates with `{ mode: 'cold' }`: stopped,
// its disk copied, started on the other node (the operation's `copying`
// step and byte count, the instance's `MigratedCold` condition). Both keep
// their id and name. Skipped with the reason where a runtime is missing;
// with ZIXIAO_REQUIRE_RUNTIMES=1 (CI) that fails instead.
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { test, after } = require('node:test')

const { zixiao } = require('./helpers')
const { missing, until, binary, noBinary, start } = require('./processes')

const roots = []
const domains = []
after(() => {
  // Nothing of a VM stays on a shared daemon when a test failed.
  for (const [uri, id] of domains) {
    spawnSync('virsh', ['-q', '-c', uri, 'destroy', id])
    spawnSync('virsh', ['-q', '-c', uri, 'undefine', id, '--nvram'])
  }
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true })
})

/** Starts node `name`'s agent for `server` in `zone`, its files in `state`. */
function agent(state, server, name, zone, flags) {
  return start([
    '--state-dir', state, ...flags, 'agent', '--server', server, '--name', name, '--zone', zone,
    '--no-networks', '--no-watchdog', '--skip-smoke-test', '--listen', '127.0.0.1:0',
  ])
}

async function ready(controller, names) {
  await until(async () => {
    const up = (await controller.listNodes()).filter((n) => n.status === 'ready').map((n) => n.id)
    return names.every((name) => up.includes(name))
  }, `nodes ${names} to be ready`)
}

const scheduledReason = (instance) =>
  (instance.conditions ?? []).find((c) => c.type === 'scheduled')?.reason

const containerSkip =
  missing('ZIXIAO_TEST_CONTAINERD_SOCKET', 'containerd') ??
  missing('ZIXIAO_TEST_ETCD_ENDPOINTS', 'etcd') ??
  missing('ZIXIAO_TEST_BUSYBOX_OCI', 'the busybox OCI archive') ??
  noBinary

test('a container restarts on the other node', { skip: containerSkip ?? false }, async () => {
  const common = ['--containerd-socket', process.env.ZIXIAO_TEST_CONTAINERD_SOCKET]
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'zx-h-cold2-node-'))
  roots.push(root)
  execFileSync(binary, ['--state-dir', `${root}/import`, ...common, 'image', 'import', process.env.ZIXIAO_TEST_BUSYBOX_OCI])
  const address = await start([
    ...common, 'server', '--etcd', process.env.ZIXIAO_TEST_ETCD_ENDPOINTS,
    '--etcd-prefix', `/zixiao-nodemig-${process.pid}`, '--listen', '127.0.0.1:0', '--id', 'nodemig',
  ])
  const names = [`nodemig-a-${process.pid}`, `nodemig-b-${process.pid}`]
  for (const name of names) await agent(`${root}/${name}`, address, name, name, common)
  const controller = await zixiao.connect(address)
  await ready(controller, names)
  const mover = `nodemover-${process.pid}`
  const created = await controller.createInstance({
    name: mover,
    spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 64, command: ['sleep', '600'] },
  })
  assert.equal(created.status, 'running')
  const other = names.find((n) => n !== created.node)

  // A container has no disk to carry: cold is refused, saying so.
  await assert.rejects(controller.migrateInstance(mover, { to: other, mode: 'cold' }), (e) => {
    assert.equal(e.code, 'failed_precondition')
    assert.match(e.message, /has no disk to copy/)
    return true
  })

  const moved = await controller.migrateInstance(mover, { to: other, mode: 'restart' })
  assert.deepEqual([moved.id, moved.name, moved.node], [created.id, mover, other])
  await until(async () => (await controller.getInstance(mover)).status === 'running', 'the container there')
  assert.equal((await controller.getInstance(mover)).node, other)
  const operation = await controller.getOperation(moved.operation)
  assert.equal(operation.phase, 'succeeded')
  assert.equal(operation.kind, 'migrate')
  // Restarted: stopped here, started there, nothing copied.
  assert.ok(!operation.steps.includes('copying'), operation.steps.join(', '))
  assert.equal(operation.steps.at(-1), 'done')
  assert.equal(await controller.deleteInstance(mover), null)
})

const vmSkip =
  missing('ZIXIAO_TEST_LIBVIRT_URI', 'libvirt') ??
  missing('ZIXIAO_TEST_LIBVIRT2_URI', 'the second libvirtd') ??
  missing('ZIXIAO_TEST_VM_KERNEL', 'the test VM kernel') ??
  missing('ZIXIAO_TEST_VM_INITRD', 'the test VM initrd') ??
  missing('ZIXIAO_TEST_VM_BASE_IMAGE', 'the test VM disk') ??
  noBinary

test('a VM migrates cold between two libvirt nodes', { skip: vmSkip ?? false }, async () => {
  const uris = [process.env.ZIXIAO_TEST_LIBVIRT_URI, process.env.ZIXIAO_TEST_LIBVIRT2_URI]
  // Both daemons' QEMU open the nodes' images and overlays: a directory
  // they can search, as the Rust migration tests use.
  const parent = path.join(process.env.ZIXIAO_TEST_DIR || '/tmp/zixiao-test', 'libvirt')
  const root = fs.mkdtempSync(path.join(parent, 'zx-h-cold2-node-'))
  fs.chmodSync(root, 0o755)
  roots.push(root)
  const names = [`nodecold-a-${process.pid}`, `nodecold-b-${process.pid}`]
  const files = [
    [process.env.ZIXIAO_TEST_VM_KERNEL, 'kernel', 'k1'],
    [process.env.ZIXIAO_TEST_VM_INITRD, 'initrd', 'i1'],
    [process.env.ZIXIAO_TEST_VM_BASE_IMAGE, 'disk', 'base'],
  ]
  names.forEach((name, i) => {
    for (const [file, kind, image] of files) {
      execFileSync(binary, [
        '--state-dir', `${root}/${name}`, '--libvirt-uri', uris[i], 'image', 'import', file,
        '--kind', kind, '--name', image,
      ])
    }
  })
  const address = await start([
    '--state-dir', `${root}/server`, 'server', '--embedded', '--insecure-no-tls', '--listen', '127.0.0.1:0',
  ])
  const controller = await zixiao.connect(address)
  // The agents' zone, where the VM is placed: the embedded server's own
  // node is elsewhere.
  const vm = `nodecold-${process.pid}`
  const zone = vm
  await agent(`${root}/${names[0]}`, address, names[0], zone, ['--libvirt-uri', uris[0]])
  await ready(controller, names.slice(0, 1))
  const created = await controller.createInstance({
    name: vm,
    spec: {
      type: 'vm', image: 'base', disk_gib: 1, kernel: 'k1', initrd: 'i1', cmdline: 'console=ttyS0',
      cpus: 1, memory_mib: 256, placement: { zone },
    },
  })
  for (const uri of uris) domains.push([uri, created.id])
  assert.equal(created.status, 'running')
  assert.equal(created.node, names[0])
  await agent(`${root}/${names[1]}`, address, names[1], zone, ['--libvirt-uri', uris[1]])
  await ready(controller, names)

  const moved = await controller.migrateInstance(vm, { to: names[1], mode: 'cold' })
  assert.deepEqual([moved.id, moved.name, moved.node], [created.id, vm, names[1]])
  assert.equal(scheduledReason(moved), 'MigratedCold')
  await until(async () => (await controller.getInstance(vm)).status === 'running', 'the VM there')
  const operation = await controller.getOperation(moved.operation)
  assert.equal(operation.phase, 'succeeded')
  assert.deepEqual(operation.steps, ['placing', 'stopping', 'copying', 'starting', 'done'])
  assert.equal(operation.progress.unit, 'bytes')
  assert.ok(Number(operation.progress.done) > 0)
  assert.equal(await controller.deleteInstance(vm), null)
})
