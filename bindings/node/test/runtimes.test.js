'use strict'
// The published surfaces against real runtimes, through `Controller.open`:
// images (import with progress, list, remove), a container's console and
// followed log on containerd; snapshots (create, list, export, restore,
// revert, delete) of a microVM on zixiao-vmm. Each test needs its runtime
// (scripts/services/*.sh, which scripts/bindings.sh's caller starts) and is
// skipped with the reason elsewhere; with ZIXIAO_REQUIRE_RUNTIMES=1 (CI) a
// missing runtime fails instead.
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { test } = require('node:test')

const { zixiao } = require('./helpers')
const { missing, until } = require('./processes')

/** A short state directory: the monitors' socket paths live under it. */
function shortDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'zx-'))
}

const noContainerd =
  missing('ZIXIAO_TEST_CONTAINERD_SOCKET', 'containerd') ??
  missing('ZIXIAO_TEST_BUSYBOX_OCI', 'the busybox OCI archive')

test('images, a console and a followed log on containerd', { skip: noContainerd ?? false }, async () => {
  const controller = await zixiao.Controller.open(shortDir(), {
    containerdSocket: process.env.ZIXIAO_TEST_CONTAINERD_SOCKET,
    // A namespace of its own: the images it removes are its own.
    containerdNamespace: 'zixiao-bindings-node',
  })
  const progress = []
  const images = await controller.importImages(process.env.ZIXIAO_TEST_BUSYBOX_OCI, {
    progress: (p) => progress.push(p),
  })
  const busybox = images.find((i) => i.name.includes('busybox'))
  assert.ok(busybox, JSON.stringify(images))
  // Progress reaches the event loop after the import resolves at the latest.
  await until(() => progress.length > 0, 'a progress report')
  assert.ok(progress.every((p) => p.done <= p.total))
  assert.ok((await controller.listImages()).some((i) => i.name === busybox.name))

  const cat = await controller.createInstance({
    name: 'cat',
    labels: { 'zixiao.io/stdin': 'true' },
    spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 32, command: ['cat'] },
  })
  assert.equal(cat.status, 'running')
  const console = await controller.attachConsole('cat')
  await console.write('hello zixiao\n')
  let seen = ''
  for await (const piece of console) {
    seen += piece.toString()
    if (seen.includes('hello zixiao')) break
  }
  assert.match(seen, /hello zixiao/)
  await console.close()
  await assert.rejects(console.write('more'), { code: 'failed_precondition' })

  await controller.createInstance({
    name: 'talk',
    spec: {
      type: 'container',
      image: 'busybox',
      cpus: 1,
      memory_mib: 32,
      command: ['sh', '-c', 'echo one; sleep 1; echo two'],
    },
  })
  const pieces = []
  for await (const piece of await controller.followLog('talk')) pieces.push(piece)
  assert.equal(Buffer.concat(pieces).toString(), 'one\ntwo\n')

  for (const name of ['cat', 'talk']) assert.equal(await controller.deleteInstance(name), null)
  await controller.removeImage(busybox.name)
  assert.ok(!(await controller.listImages()).some((i) => i.name === busybox.name))
})

test('a container clone is a new instance running the same spec', { skip: noContainerd ?? false }, async () => {
  const controller = await zixiao.Controller.open(shortDir(), {
    containerdSocket: process.env.ZIXIAO_TEST_CONTAINERD_SOCKET,
    containerdNamespace: 'zixiao-bindings-node-clone',
  })
  const [image] = await controller.importImages(process.env.ZIXIAO_TEST_BUSYBOX_OCI, {
    name: 'localhost/node/clone:1',
  })
  const source = await controller.createInstance({
    name: 'src',
    spec: {
      type: 'container',
      image: image.name,
      cpus: 1,
      memory_mib: 32,
      command: ['sh', '-c', 'echo cloned-cmd; sleep 600'],
    },
  })
  const clone = await controller.cloneInstance('src', 'copy')
  assert.equal(clone.status, 'running')
  assert.notEqual(clone.id, source.id)
  assert.equal(clone.clone_of.source, source.id)
  assert.deepEqual(clone.spec.command, source.spec.command)
  await until(
    async () => (await controller.readLog('copy')).data.toString().includes('cloned-cmd'),
    "the clone's output",
  )

  await assert.rejects(controller.cloneInstance('src', 'copy'), { code: 'already_exists' })
  await assert.rejects(controller.cloneInstance('src', 'other', { linked: true }), {
    code: 'invalid_argument',
    message: /linked/,
  })
  await assert.rejects(controller.cloneInstance('nope', 'other'), { code: 'not_found' })
  const names = (await controller.listInstances()).map((i) => i.name).sort()
  assert.deepEqual(names, ['copy', 'src'])

  for (const name of ['copy', 'src']) assert.equal(await controller.deleteInstance(name), null)
  await controller.removeImage(image.name)
})

/** The OCI layout tar `archive` with its index.json's annotations
 * dropped, so its image has no name at all (through `tar`, as Node has no
 * tar reader). */
function namelessCopy(archive) {
  const { execFileSync } = require('node:child_process')
  const dir = shortDir()
  const layout = path.join(dir, 'layout')
  fs.mkdirSync(layout)
  execFileSync('tar', ['-xf', archive, '-C', layout])
  const indexPath = path.join(layout, 'index.json')
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'))
  for (const manifest of index.manifests) delete manifest.annotations
  fs.writeFileSync(indexPath, JSON.stringify(index))
  const copy = path.join(dir, 'nameless.tar')
  execFileSync('tar', ['-cf', copy, '-C', layout, '.'])
  return copy
}

test('an image without a name is imported under the name given', { skip: noContainerd ?? false }, async () => {
  const archive = namelessCopy(process.env.ZIXIAO_TEST_BUSYBOX_OCI)
  const controller = await zixiao.Controller.open(shortDir(), {
    containerdSocket: process.env.ZIXIAO_TEST_CONTAINERD_SOCKET,
    containerdNamespace: 'zixiao-bindings-node-named',
  })
  await assert.rejects(controller.importImages(archive), {
    code: 'invalid_argument',
    message: /has no name/,
  })
  await assert.rejects(controller.importImages(archive, { name: 'Not/A/Name' }), {
    code: 'invalid_argument',
    message: /name\.repository/,
  })
  const [image, ...others] = await controller.importImages(archive, { name: 'localhost/node/box:1' })
  assert.deepEqual(others, [])
  assert.equal(image.name, 'localhost/node/box:1')

  await controller.createInstance({
    name: 'named',
    spec: { type: 'container', image: 'localhost/node/box:1', cpus: 1, memory_mib: 32, command: ['echo', 'named'] },
  })
  const pieces = []
  for await (const piece of await controller.followLog('named')) pieces.push(piece)
  assert.equal(Buffer.concat(pieces).toString(), 'named\n')
  assert.equal(await controller.deleteInstance('named'), null)
  await controller.removeImage(image.name)
})

const noKernel =
  missing('ZIXIAO_TEST_MICROVM_KERNEL', 'the test microVM kernel') ??
  missing('ZIXIAO_TEST_MICROVM_INITRD', 'the test microVM initramfs')

test('a kernel and an initrd imported with their kind are listed and removed', { skip: noKernel ?? false }, async () => {
  const kernel = process.env.ZIXIAO_TEST_MICROVM_KERNEL
  const initrd = process.env.ZIXIAO_TEST_MICROVM_INITRD
  const controller = await zixiao.Controller.open(shortDir())
  const [k] = await controller.importImages(kernel, { kind: 'kernel', name: 'node-kernel' })
  const [i] = await controller.importImages(initrd, { kind: 'initrd', name: 'node-initrd' })
  assert.equal(k.kind, 'kernel')
  assert.equal(k.format, 'bzimage')
  assert.equal(i.kind, 'initrd')
  const listed = Object.fromEntries(
    (await controller.listImages({ instanceType: 'microvm' })).map((image) => [image.name, image]),
  )
  assert.equal(listed['node-kernel'].size_bytes, fs.statSync(kernel).size)
  assert.equal(listed['node-kernel'].digest, k.digest)
  assert.match(k.digest, /^sha256:[0-9a-f]{64}$/)
  assert.equal(listed['node-initrd'].kind, 'initrd')

  const garbage = path.join(shortDir(), 'garbage')
  fs.writeFileSync(garbage, 'no kernel here')
  await assert.rejects(controller.importImages(garbage, { kind: 'kernel', name: 'bad' }), {
    code: 'invalid_argument',
    message: /is not a kernel/,
  })
  await controller.removeImage('node-kernel', { kind: 'kernel' })
  await controller.removeImage('node-initrd', { kind: 'initrd' })
  assert.deepEqual(await controller.listImages({ instanceType: 'microvm' }), [])
})

const noVmm = missing('ZIXIAO_VMM_BIN', 'the zixiao-vmm monitor')

test('snapshots of a microVM: export, restore, revert, delete', { skip: noVmm ?? false }, async () => {
  const guest = zixiao._vmmTestGuest()
  assert.ok(guest, "zixiao-vmm's test guest was built (gcc and ld)")
  const controller = await zixiao.Controller.open(shortDir())
  const spec = {
    type: 'microvm',
    kernel: guest,
    cmdline: 'console=ttyS0 zx.mode=loop',
    cpus: 1,
    memory_mib: 64,
    backend: 'vmm',
  }
  const v1 = await controller.createInstance({ name: 'v1', spec })
  assert.equal(v1.status, 'running')
  await until(async () => (await controller.readLog('v1')).data.includes('ZX: count='), 'the guest to count')

  const taken = await controller.createSnapshot('v1', 's1')
  assert.equal(taken.includes_memory, true)
  assert.deepEqual((await controller.listSnapshots('v1')).map((s) => s.name), ['s1'])
  const copy = path.join(shortDir(), 'v1-s1')
  await controller.exportSnapshot('v1', 's1', copy)
  assert.ok(fs.existsSync(path.join(copy, 'zixiao-snapshot.json')))
  await assert.rejects(controller.exportSnapshot('v1', 's1', copy), { code: 'invalid_argument' })
  const v2 = await controller.restoreInstance('v2', copy)
  assert.equal(v2.status, 'running')
  const log = await until(async () => {
    const data = (await controller.readLog('v2')).data.toString()
    return data.includes('ZX: count=') ? data : null
  }, 'the restored guest to count')
  assert.ok(!log.includes('ZX: ready'), 'the restored guest went on, it did not boot again')

  await controller.revertSnapshot('v1', 's1')
  await controller.deleteSnapshot('v1', 's1')
  assert.deepEqual(await controller.listSnapshots('v1'), [])
  for (const name of ['v1', 'v2']) assert.equal(await controller.deleteInstance(name), null)
})

const noRegistry =
  missing('ZIXIAO_TEST_CONTAINERD_SOCKET', 'containerd') ??
  missing('ZIXIAO_TEST_REGISTRY_BUSYBOX', "the loopback registry's busybox")

test('an image pulled from a registry is listed, and bad pulls name the field', { skip: noRegistry ?? false }, async () => {
  const reference = process.env.ZIXIAO_TEST_REGISTRY_BUSYBOX
  const repository = reference.slice(0, reference.lastIndexOf(':'))
  const controller = await zixiao.Controller.open(shortDir(), {
    containerdSocket: process.env.ZIXIAO_TEST_CONTAINERD_SOCKET,
    containerdNamespace: 'zixiao-bindings-node-pull',
  })
  const events = []
  const image = await controller.pullImage(reference, { progress: (e) => events.push(e) })
  assert.equal(image.name, reference)
  assert.match(image.digest, /^sha256:/)
  // Progress reaches the event loop after the pull resolves at the latest.
  await until(() => events.some((e) => e.event === 'unpacking'), 'the last progress report')
  assert.equal(events[0].event, 'resolved')
  assert.ok(events.some((e) => e.event === 'fetched' && e.index >= 1 && e.count >= e.index))
  assert.ok((await controller.listImages()).some((i) => i.name === reference))

  await assert.rejects(controller.pullImage(`${repository}:.bad`), {
    code: 'invalid_argument',
    message: /tag/,
  })
  await assert.rejects(controller.pullImage(reference, { username: 'alice' }), {
    code: 'invalid_argument',
    message: /password/,
  })
  await assert.rejects(controller.pullImage(`${repository}:nope`), { code: 'not_found' })
  await assert.rejects(controller.pullImage(reference, { platform: 'Linux/amd64' }), {
    code: 'invalid_argument',
    message: /platform/,
  })
  assert.equal((await controller.pullImage(reference, { platform: 'linux/amd64' })).digest, image.digest)
  assert.equal(await controller.removeImage(reference), null)

  // A registry whose certificate a private CA issued: trusted with that
  // CA's PEM; a key given instead is refused before anything is sent.
  const tlsReference = process.env.ZIXIAO_TEST_TLS_REGISTRY_BUSYBOX
  const login = {
    username: process.env.ZIXIAO_TEST_TLS_REGISTRY_USER,
    password: fs.readFileSync(process.env.ZIXIAO_TEST_TLS_REGISTRY_PASSWORD_FILE, 'utf8').trim(),
  }
  await assert.rejects(controller.pullImage(tlsReference, login), {
    code: 'failed_precondition',
    message: /registry-ca/,
  })
  const key = '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n'
  await assert.rejects(controller.pullImage(tlsReference, { ...login, registryCas: [key] }), {
    code: 'invalid_argument',
    message: /registry_ca/,
  })
  const ca = fs.readFileSync(process.env.ZIXIAO_TEST_TLS_REGISTRY_CA, 'utf8')
  const pulled = await controller.pullImage(tlsReference, { ...login, registryCas: [ca] })
  assert.equal(pulled.name, tlsReference)
  assert.equal(await controller.removeImage(tlsReference), null)
})
