// What the interop suites share: the tollgate binary and Chromium, pass/fail counting,
// loopback listeners, starting `tollgate serve`, the CLI, and running a suite to its summary
// line. Each suite is a `*.mjs` file beside `lib/` (run.sh runs them all).

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';
import Provider from 'oidc-provider';
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

// oidc-provider on 127.0.0.1 with its development login and consent screens, as the pages'
// sign-in IdP (client `tollgate-login`, secret `login-client-secret`, redirect
// `${web}/login/callback`, the `org` claim in the ID token) and as the OAuth server of the
// interop app (client `tollgate-app`, secret `app-client-secret`, redirect
// `${web}/oauth/callback`). `accounts` maps a login to its org. With `refreshTokens` the app's
// client gets refresh tokens, with `revocation` the RFC 7009 endpoint is on, and `onRequest`
// sees every request before the provider does. Returns { issuer, port, provider }.
export async function startIdp(web, accounts, { refreshTokens = false, revocation = false, onRequest } = {}) {
  const server = http.createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'tollgate-login',
        client_secret: 'login-client-secret',
        redirect_uris: [`${web}/login/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'tollgate-app',
        client_secret: 'app-client-secret',
        redirect_uris: [`${web}/oauth/callback`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    pkce: { required: () => true },
    scopes: ['openid', 'org', 'offline_access', 'api:read'],
    claims: { openid: ['sub'], org: ['org'] },
    // The org claim in the ID token itself (by default only userinfo would carry it).
    conformIdTokenClaims: false,
    ...(refreshTokens ? { issueRefreshToken: async (ctx, client) => client.clientId === 'tollgate-app' } : {}),
    features: { devInteractions: { enabled: true }, revocation: { enabled: revocation } },
    findAccount: async (ctx, id) => (accounts[id]
      ? { accountId: id, claims: async () => ({ sub: id, org: accounts[id].org }) }
      : undefined),
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (onRequest) onRequest(req, res);
    callback(req, res);
  });
  cleanups.push(() => server.close());
  return { issuer, port, provider };
}

// The app's API on 127.0.0.1: any bearer the provider at `issuer` accepts (its userinfo);
// answers `{sub}`, or 401 `invalid_token`. Returns its port.
export async function startUserinfoApi(issuer) {
  const api = http.createServer(async (req, res) => {
    const r = await fetch(`${issuer}/me`, { headers: { authorization: req.headers.authorization || '' } });
    res.writeHead(r.status === 200 ? 200 : 401, { 'content-type': 'application/json' });
    res.end(r.status === 200 ? JSON.stringify({ sub: (await r.json()).sub }) : '{"error":"invalid_token"}');
  });
  const port = await listen(api);
  cleanups.push(() => api.close());
  return port;
}

// tollgate signing people in at the IdP of [startIdp] (`--login oidc`, the org from the `org`
// claim), under [writePolicies] for the IdP and `apiPorts`, on `webPort`. Returns { tg (as
// [startTollgate]), data (its data directory), admin (acme's admin token) }.
export async function startTollgateSigningIn(dir, webPort, issuer, idpPort, apiPorts) {
  const policies = writePolicies(dir, idpPort, apiPorts);
  const secretFile = path.join(dir, 'login-secret');
  writeFileSync(secretFile, 'login-client-secret\n');
  const tg = await startTollgate(dir, policies, webPort, [
    '--login', 'oidc', '--login-oidc-issuer', issuer, '--login-oidc-client-id', 'tollgate-login',
    '--login-oidc-client-secret-file', secretFile, '--login-oidc-org-claim', 'org',
    '--login-oidc-scopes', 'org',
  ]);
  const data = path.join(dir, 'data');
  const admin = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'root', '--role', 'admin']).trim();
  return { tg, data, admin };
}
