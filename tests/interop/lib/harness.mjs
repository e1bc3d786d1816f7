// What the interop suites share: the tollgate binary and Chromium, pass/fail counting,
// loopback listeners, starting `tollgate serve`, the CLI, and running a suite to its summary
// line. Each suite is a `*.mjs` file beside `lib/` (run.sh runs them all).

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
export const BIN = process.env.TOLLGATE_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'tollgate');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const counts = { passed: 0, failed: 0 };
// Run last to first when the suite ends, whatever happened.
export const cleanups = [];

export function check(name, cond, detail = '') {
  if (cond) {
    counts.passed += 1;
    console.log(`ok - ${name}`);
  } else {
    counts.failed += 1;
    console.log(`FAILED - ${name} ${detail}`);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function listen(server) {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server.address().port;
}

export async function freePort() {
  const s = http.createServer();
  const p = await listen(s);
  await new Promise((r) => s.close(r));
  return p;
}

// `DIR/policies` with two policies: `provider` (the OAuth server at 127.0.0.1:providerPort,
// for token calls) and `api` (localhost on `apiPorts`, private). Returns the directory.
export function writePolicies(dir, providerPort, apiPorts) {
  const policies = path.join(dir, 'policies');
  mkdirSync(policies);
  writeFileSync(path.join(policies, 'interop.toml'), `
[[policy]]
name = "provider"
route = "direct"
  [[policy.allow]]
  cidrs = ["127.0.0.1/32"]
  ports = [${providerPort}]

[[policy]]
name = "api"
route = "direct"
  [[policy.allow]]
  hosts = ["localhost"]
  ports = [${apiPorts.join(', ')}]
  private = true
`);
  return policies;
}

// `tollgate serve` on `webPort`, the proxy on a free port: { child, proxy, web, logs() }.
export async function startTollgate(dir, policies, webPort, extra = []) {
  const child = spawn(BIN, [
    'serve', '--data', path.join(dir, 'data'), '--policies', policies,
    '--proxy-listen', '127.0.0.1:0', '--web-listen', `127.0.0.1:${webPort}`, ...extra,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => child.kill('SIGKILL'));
  let logs = '';
  child.stderr.on('data', (d) => { logs += d; });
  const proxy = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`tollgate did not start:\n${logs}`)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/proxy listening on (\S+)/);
      if (m && out.includes('web listening on')) { clearTimeout(t); resolve(m[1]); }
    });
  });
  return { child, proxy, web: `http://127.0.0.1:${webPort}`, logs: () => logs };
}

// `tollgate demo`: waits for its one printed curl command. Returns { child, command (program
// and arguments, split as a shell splits that unquoted line), dir (its temporary directory),
// output(), exited (a promise of the exit code) }. Cleanup kills it if it is still running.
export async function startDemo() {
  const child = spawn(BIN, ['demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => child.kill('SIGKILL'));
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  let out = '';
  let logs = '';
  child.stderr.on('data', (d) => { logs += d; });
  child.stdout.on('data', (d) => { out += d; });
  const deadline = Date.now() + 60000;
  let command = null;
  while (!command) {
    if (Date.now() > deadline) throw new Error(`tollgate demo printed no curl command:\n${out}\n${logs}`);
    command = out.split('\n').find((l) => l.startsWith('curl '));
    if (!command) await sleep(50);
  }
  const dir = out.match(/temporary data and policies\s+(\S+)/)[1];
  return { child, command: command.split(/\s+/), dir, output: () => out, exited };
}

export function cli(args, env = {}) {
  return execFileSync(BIN, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
}

// Creates acme's app `interop` (domain localhost, plain http upstream) for the OAuth server at
// `issuer` with `tollgate app apply`, as acme's `admin` at `web`.
export function applyInteropApp(dir, web, admin, { issuer, clientId, clientSecret, scopes, revocation }) {
  const file = path.join(dir, 'app.toml');
  writeFileSync(file, `
id = "interop"
name = "Interop API"
description = "A real OpenID Provider"
approval_prompt = "Let the runner call the interop API as you?"
authorize_url = "${issuer}/auth"
token_url = "${issuer}/token"
${revocation ? `revocation_url = "${issuer}/token/revocation"` : ''}
issuer = "${issuer}"
client_id = "${clientId}"
client_secret = { env = "INTEROP_SECRET" }
scopes = ${JSON.stringify(scopes)}
egress_policy = "provider"
domains = ["localhost"]
upstream_tls = false

[authorize_params]
prompt = "consent"
`);
  cli(['app', 'apply', '-f', file], {
    TOLLGATE_URL: web, TOLLGATE_TOKEN: admin, INTEROP_SECRET: clientSecret,
  });
}

export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: BROWSER_ARGS,
  });
  cleanups.push(() => browser.close());
  return browser;
}

const BROWSER_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Headless Chromium driven by puppeteer-core, for the page suites (the older suites still use
// playwright-core through launchChromium).
export async function launchBrowser() {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true, args: BROWSER_ARGS,
  });
  cleanups.push(() => browser.close());
  return browser;
}

// Where the page suites keep their screenshots: target/screenshots/ (the build directory),
// one PNG per page, for a reviewer to look at.
export const SCREENSHOTS = path.join(
  process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'screenshots');

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

// Runs `main`, cleans up, prints "`label`: N passed, N failed" and exits non-zero on any
// failure (an exception counts as one).
export async function runSuite(label, main) {
  try {
    await main();
  } catch (e) {
    counts.failed += 1;
    console.log(`FAILED - ${label} run aborted: ${e.stack || e}`);
  } finally {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch { /* already gone */ }
    }
    console.log(`${label}: ${counts.passed} passed, ${counts.failed} failed`);
    process.exit(counts.failed === 0 ? 0 : 1);
  }
}
