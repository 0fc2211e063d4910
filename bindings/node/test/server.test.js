'use strict'
// `connect()` against a real cluster: a `zixiao server` on etcd and a
// `zixiao agent` on the real containerd, both processes of the `zixiao`
// binary (target/debug/zixiao, built by the test command before the
// bindings; ZIXIAO_BIN overrides it). Through the same Controller surface as
// `open()`: a container created, watched until it runs, its log read, its
// console typed into, a snapshot its runtime cannot take (unsupported), a
// bad request (invalid_argument naming the field), and deleted; the node's
// usage history with its host's memory. Skipped with
// the reason where containerd or etcd is missing; with
// ZIXIAO_REQUIRE_RUNTIMES=1 (CI) that fails instead.
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { test, after } = require('node:test')

const { zixiao } = require('./helpers')
const { missing, until, binary, noBinary, start } = require('./processes')

const skip =
  missing('ZIXIAO_TEST_CONTAINERD_SOCKET', 'containerd') ??
  missing('ZIXIAO_TEST_ETCD_ENDPOINTS', 'etcd') ??
  missing('ZIXIAO_TEST_BUSYBOX_OCI', 'the busybox OCI archive') ??
  noBinary

const roots = []
after(() => {
  // The agent's watchdog outlives the agent by design; it ends once the
  // node's state directory is gone.
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true })
})

test('a container through a server and its agent', { skip: skip ?? false }, async () => {
  const socket = process.env.ZIXIAO_TEST_CONTAINERD_SOCKET
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'zx-node-'))
  roots.push(root)
  const common = ['--containerd-socket', socket]
  // The image, in the containerd namespace the agent's node uses.
  execFileSync(binary, ['--state-dir', `${root}/import`, ...common, 'image', 'import', process.env.ZIXIAO_TEST_BUSYBOX_OCI])
  const address = await start([
    ...common, 'server', '--etcd', process.env.ZIXIAO_TEST_ETCD_ENDPOINTS,
    '--etcd-prefix', `/zixiao-node-${process.pid}`, '--listen', '127.0.0.1:0', '--id', 'node',
  ])
  await start([
    '--state-dir', `${root}/agent`, ...common, 'agent', '--server', address,
    '--name', 'node-node', '--no-networks', '--listen', '127.0.0.1:0',
  ])
  const controller = await zixiao.connect(address)
  await until(async () => (await controller.listNodes()).some((n) => n.status === 'ready'), 'the agent')

  const watch = await controller.watchInstances()
  await controller.createInstance(
    {
      name: 'node-remote',
      labels: { 'zixiao.io/stdin': 'true' },
      spec: {
        type: 'container', image: 'busybox', cpus: 1, memory_mib: 32,
        command: ['sh', '-c', 'echo hello from the agent; exec cat'],
      },
    },
    { wait: false },
  )
  for await (const event of watch) {
    if (event.instance?.name === 'node-remote' && event.instance.status === 'running') break
  }
  const web = await controller.getInstance('node-remote')
  assert.equal(web.node, 'node-node')
  assert.equal(web.runtime, 'containerd')

  await until(
    async () => (await controller.readLog('node-remote')).data.toString().includes('hello from the agent'),
    "the container's first line",
  )
  const console = await controller.attachConsole('node-remote')
  await console.write('typed through two hops\n')
  let seen = ''
  for await (const piece of console) {
    seen += piece.toString()
    if (seen.includes('typed through two hops')) break
  }
  await console.close()

  await assert.rejects(controller.createSnapshot('node-remote', 's1'), { code: 'unsupported' })
  await assert.rejects(
    controller.createInstance({ name: 'tiny', spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 1 } }),
    (err) => err.code === 'invalid_argument' && err.field === 'spec.memory_mib',
  )
  await assert.rejects(controller.getInstance('tiny'), { code: 'not_found' })

  assert.equal(await controller.deleteInstance('node-remote'), null)
  await assert.rejects(controller.getInstance('node-remote'), { code: 'not_found' })

  // The agent's heartbeats bring what its host (this machine) uses; the
  // server samples every 10 s.
  const hosted = await until(async () => (await controller.nodeStatsHistory('node-node'))
    .findLast((s) => s.host_memory_capacity_bytes != null), "the node's host usage")
  const memTotal = Number(/^MemTotal:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024
  // A u64 above 2^32 - 1 arrives as a bigint, as every u64 the binding returns.
  assert.equal(Number(hosted.host_memory_capacity_bytes), memTotal)
  const used = Number(hosted.host_memory_bytes)
  assert.ok(used > 0 && used < memTotal, `${used} of ${memTotal}`)
  assert.equal(hosted.host_cpu_capacity_millicores, os.cpus().length * 1000)
})
