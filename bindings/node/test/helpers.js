'use strict'
// Controllers over a fresh state directory whose node runs every instance
// type on zixiao-testing's fake runtime: the addon must be built with the
// `testing` cargo feature (`npm run build:testing`, as scripts/bindings.sh does).

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const zixiao = require('..')

function stateDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'zixiao-node-test-'))
}

async function fakeController() {
  if (typeof zixiao.Controller._openWithFakeRuntimes !== 'function') {
    throw new Error('zixiao was built without the `testing` feature; run `npm run build:testing`')
  }
  return zixiao.Controller._openWithFakeRuntimes(stateDir())
}

/** A request for a small container named `name`. */
function container(name, spec = {}) {
  return { name, spec: { type: 'container', image: 'busybox', cpus: 1, memory_mib: 64, ...spec } }
}

module.exports = { zixiao, stateDir, fakeController, container }
