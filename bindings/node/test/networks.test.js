'use strict'
// Networks: create, list, get and delete them; instances that join one get
// an address in its subnet and a MAC; bad input rejects with its kind,
// naming the field. The fake-runtime controller stores networks and hands
// out addresses without touching this machine's networking.
const assert = require('node:assert/strict')
const net = require('node:net')
const { test } = require('node:test')

const { fakeController, container } = require('./helpers')

const LAN = { name: 'lan', subnets: ['10.77.0.0/24'] }

/** Whether IPv4 `address` lies in 10.77.0.0/24. */
function inLan(address) {
  const block = new net.BlockList()
  block.addSubnet('10.77.0.0', 24, 'ipv4')
  return net.isIPv4(address) && block.check(address, 'ipv4')
}

test('create, get, list and delete networks', async () => {
  const controller = await fakeController()
  const lan = await controller.createNetwork({ ...LAN, reserved: ['10.77.0.2'], nat: false })
  assert.equal(lan.name, 'lan')
  assert.deepEqual(lan.subnets, [{ cidr: '10.77.0.0/24', gateway: '10.77.0.1', reserved: ['10.77.0.2/32'] }])
  assert.equal(lan.nat, false)
  assert.equal(lan.isolated, true)
  assert.match(lan.bridge, /^zxb/)

  await controller.createNetwork({ name: 'dmz', subnets: ['10.78.0.0/24', 'fd78::/64'] })
  assert.deepEqual((await controller.listNetworks()).map((n) => n.name), ['dmz', 'lan'])
  assert.deepEqual(await controller.getNetwork('lan'), lan)

  await controller.deleteNetwork('lan')
  assert.deepEqual((await controller.listNetworks()).map((n) => n.name), ['dmz'])
  await assert.rejects(controller.getNetwork('lan'), { code: 'not_found' })
})

test('bad network requests reject by kind and change nothing', async () => {
  const controller = await fakeController()
  await controller.createNetwork(LAN)

  await assert.rejects(controller.createNetwork({ name: 'wide', subnets: ['10.77.0.0/16'] }), (err) => {
    assert.equal(err.code, 'invalid_argument')
    assert.equal(err.field, 'subnets[0]')
    assert.match(err.message, /overlaps.*lan/)
    return true
  })
  await assert.rejects(controller.createNetwork({ name: 'lan', subnets: ['10.99.0.0/24'] }), {
    code: 'already_exists',
  })
  await assert.rejects(controller.createNetwork({ name: 'odd', subnets: ['10.79.0.0/33'] }), {
    code: 'invalid_argument',
    field: 'subnets[0]',
  })
  await assert.rejects(controller.createNetwork({ name: 'odd', subnets: ['10.79.0.0/24'], mtu: 9000 }), (err) => {
    assert.equal(err.code, 'invalid_argument')
    assert.match(err.message, /mtu/)
    return true
  })
  await assert.rejects(controller.getNetwork('ghost'), (err) => {
    assert.equal(err.code, 'not_found')
    assert.match(err.message, /ghost/)
    return true
  })
  await assert.rejects(controller.deleteNetwork('ghost'), { code: 'not_found' })
  assert.deepEqual((await controller.listNetworks()).map((n) => n.name), ['lan'])
})

test('an instance on a network gets an address and holds the network', async () => {
  const controller = await fakeController()
  await controller.createNetwork(LAN)
  const created = await controller.createInstance(container('web', { networks: ['lan'] }), { wait: false })
  assert.deepEqual(created.spec.networks, ['lan'])
  assert.equal(created.attachments.length, 1)
  const [attachment] = created.attachments
  assert.equal(attachment.network, 'lan')
  assert.equal(attachment.interface, 'eth0')
  assert.equal(attachment.addresses.length, 1)
  const [address] = attachment.addresses
  assert.ok(inLan(address.address), `${address.address} is in 10.77.0.0/24`)
  assert.ok(!['10.77.0.0', '10.77.0.1', '10.77.0.255'].includes(address.address))
  assert.equal(address.gateway, '10.77.0.1')
  assert.equal(address.prefix_len, 24)
  assert.match(attachment.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/)

  const running = await controller.startInstance('web') // waits until it runs
  assert.equal(running.status, 'running')
  assert.deepEqual(running.attachments, created.attachments)

  await assert.rejects(controller.createInstance(container('db', { networks: ['ghost'] })), {
    code: 'invalid_argument',
    field: 'spec.networks[0]',
  })
  await assert.rejects(controller.deleteNetwork('lan'), (err) => {
    assert.equal(err.code, 'failed_precondition')
    assert.match(err.message, /web/)
    return true
  })
  assert.equal((await controller.getNetwork('lan')).name, 'lan')
  assert.equal(await controller.deleteInstance('web'), null)
  await controller.deleteNetwork('lan')
  assert.deepEqual(await controller.listNetworks(), [])
})

test('an instance without networks has no attachments', async () => {
  const controller = await fakeController()
  const created = await controller.createInstance(container('web'))
  assert.equal(created.attachments, undefined)
})
