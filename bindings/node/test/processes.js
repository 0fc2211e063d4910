'use strict'
// What the tests against real runtimes share: why a runtime is missing,
// polling a condition with a deadline, and `zixiao` processes (a server,
// agents) that a test starts and that are killed when its file ends.

const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const { after } = require('node:test')

/** Why the runtime in `variable` is missing, or null when it is there. */
function missing(variable, what) {
  if (process.env[variable]) return null
  const reason = `${what}: ${variable} is not set (scripts/services start it)`
  if (process.env.ZIXIAO_REQUIRE_RUNTIMES === '1') throw new Error(reason)
  return reason
}

/** Polls `condition` until it returns something truthy, for `timeoutMs` at most. */
async function until(condition, what, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await condition()
    if (value) return value
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The `zixiao` binary (target/debug/zixiao, built before the bindings; ZIXIAO_BIN overrides it). */
const binary = process.env.ZIXIAO_BIN || path.resolve(__dirname, '../../../target/debug/zixiao')
/** Why the binary cannot run, or null. */
const noBinary = fs.existsSync(binary) ? null : `the zixiao binary is not built at ${binary}`

const started = []
after(() => {
  for (const child of started) child.kill('SIGKILL')
})

/** Starts `zixiao ARGS` and resolves with the address of its first line. */
function start(args) {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'ignore'] })
  started.push(child)
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout })
    lines.once('line', (line) => {
      const [, address] = line.split(' listening on ')
      if (address) resolve(address.trim())
      else reject(new Error(`zixiao ${args[0]} did not start: ${line}`))
    })
    child.once('exit', (code) => reject(new Error(`zixiao ${args[0]} exited with ${code}`)))
  })
}

module.exports = { missing, until, binary, noBinary, start }
