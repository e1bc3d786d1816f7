// Interoperability: tollgate against a real OAuth 2.0 / OpenID Connect server (oidc-provider),
// driven end to end with headless Chromium (consent page, provider login and consent,
// callback) and real runner clients (Python `requests` and curl through HTTP_PROXY).
//
// The provider requires PKCE, issues 4-second access tokens and rotating refresh tokens with
// reuse detection (a rotated refresh token used twice revokes the whole grant), so parallel
// requests at expiry only succeed if tollgate refreshes exactly once.
//
//   node tests/interop/oauth_flow.mjs            (needs: cargo build, chromium, python3 requests)
//
// Prints "interop: N passed, N failed" last; exits non-zero on any failure.

import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Provider from 'oidc-provider';
import {
  applyInteropApp, check, cleanups, cli, freePort, launchChromium, listen, runSuite, sleep, startTollgate,
  writePolicies,
} from './lib/harness.mjs';

const ACCESS_TTL = 4;

// --- runner calls through the proxy -----------------------------------------------------
// Runner calls run as child processes *asynchronously*: the provider and the API live in this
// process, so blocking the event loop would deadlock the request they serve.
const run = promisify(execFile);

async function pythonGet(proxyUrl, url, parallel = 1) {
  const code = `
import json, sys, requests, concurrent.futures as cf
proxies = {"http": sys.argv[1]}
def one(_):
    r = requests.get(sys.argv[2], proxies=proxies, timeout=20)
    try:
        body = r.json()
    except Exception:
        body = r.text
    return {"status": r.status_code, "body": body, "proxy_status": r.headers.get("Proxy-Status")}
with cf.ThreadPoolExecutor(max_workers=int(sys.argv[3])) as ex:
    print(json.dumps(list(ex.map(one, range(int(sys.argv[3]))))))
`;
  const { stdout } = await run('python3', ['-c', code, proxyUrl, url, String(parallel)]);
  return JSON.parse(stdout);
}

async function curlGet(proxyUrl, url) {
  const { stdout: out } = await run('curl', ['-s', '-x', proxyUrl, '-w', '\n%{http_code}', url]);
  const i = out.lastIndexOf('\n');
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-interop-'));
  const webPort = await freePort();
  const redirectUri = `http://127.0.0.1:${webPort}/oauth/callback`;

  // --- the OAuth server ---------------------------------------------------------------
  const providerServer = http.createServer();
  const providerPort = await listen(providerServer);
  const issuer = `http://127.0.0.1:${providerPort}`;
  let refreshGrants = 0;
  let codeGrants = 0;
  let grantRevocations = 0;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'tollgate-interop',
      client_secret: 'interop-client-secret',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'api:read'],
    ttl: { AccessToken: ACCESS_TTL, RefreshToken: 3600, Grant: 3600, Session: 3600, Interaction: 600 },
    rotateRefreshToken: true,
    issueRefreshToken: async () => true,
    features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
    findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  provider.on('grant.success', (ctx) => {
    const t = ctx.oidc.params.grant_type;
    if (t === 'refresh_token') refreshGrants += 1;
    if (t === 'authorization_code') codeGrants += 1;
  });
  provider.on('grant.revoked', () => { grantRevocations += 1; });
  providerServer.on('request', provider.callback());
  cleanups.push(() => providerServer.close());

  // --- the protected API: validates the bearer at the provider's userinfo ----------------
  const api = http.createServer(async (req, res) => {
    const auth = req.headers.authorization || '';
    const r = await fetch(`${issuer}/me`, { headers: { authorization: auth } });
    if (r.status !== 200) {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'invalid_token' }));
      return;
    }
    const me = await r.json();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ sub: me.sub, proxy_auth_seen: Boolean(req.headers['proxy-authorization']) }));
  });
  const apiPort = await listen(api);
  cleanups.push(() => api.close());

  // The same API over TLS, with a certificate from a test CA that only tollgate trusts
  // (through --upstream-ca-file): clients must go through interception to reach it.
  const pki = path.join(dir, 'pki');
  mkdirSync(pki);
  const ossl = (args) => execFileSync('openssl', args, { cwd: pki, stdio: 'ignore' });
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=interop upstream CA']);
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'api.key', '-out', 'api.csr', '-subj', '/CN=localhost']);
  writeFileSync(path.join(pki, 'san.ext'), 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n');
  ossl(['x509', '-req', '-in', 'api.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'api.pem', '-days', '2', '-extfile', 'san.ext']);
  const apiTls = https.createServer({
    key: readFileSync(path.join(pki, 'api.key')), cert: readFileSync(path.join(pki, 'api.pem')),
  }, (req, res) => api.emit('request', req, res));
  const apiTlsPort = await listen(apiTls);
  cleanups.push(() => apiTls.close());

  // --- tollgate with policies for both -------------------------------------------------
  const policies = writePolicies(dir, providerPort, [apiPort, apiTlsPort]);
  const tg = await startTollgate(dir, policies, webPort, ['--upstream-ca-file', path.join(pki, 'ca.pem')]);

  const data = path.join(dir, 'data');
  const admin = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'root', '--role', 'admin']).trim();
  const runner = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'alice']).trim();
  applyInteropApp(dir, `http://127.0.0.1:${webPort}`, admin, {
    issuer, clientId: 'tollgate-interop', clientSecret: 'interop-client-secret',
    scopes: ['openid', 'offline_access', 'api:read'], revocation: true,
  });

  const proxyUrl = `http://alice:${runner}@${tg.proxy}`;
  const apiUrl = `http://localhost:${apiPort}/whoami`;

  // 1. First call: authorization required, with a consent URL.
  const [first] = await pythonGet(proxyUrl, apiUrl);
  check('first call answers 401 authorization_required', first.status === 401 && first.body.error === 'authorization_required', JSON.stringify(first));
  check('401 carries Proxy-Status', (first.proxy_status || '').startsWith('tollgate; error=http_request_denied'));
  const consentUrl = first.body.consent_url;
  check('consent URL points at tollgate', typeof consentUrl === 'string' && consentUrl.startsWith(`http://127.0.0.1:${webPort}/consent/`), consentUrl);
  const [repeated] = await pythonGet(proxyUrl, apiUrl);
  check('a repeated 401 gives the same consent URL, expires_in counting down',
    repeated.body.consent_url === consentUrl && repeated.body.expires_in <= first.body.expires_in, JSON.stringify(repeated.body));

  // 2. The user opens it in a browser: consent page → Authorize → provider login → consent →
  //    callback → success page.
  const browser = await launchChromium();
  const page = await browser.newPage();
  await page.goto(consentUrl);
  const consentText = await page.textContent('body');
  check('consent page shows app name, prompt, org and user',
    consentText.includes('Interop API') && consentText.includes('Let the runner call the interop API as you?')
    && consentText.includes('acme') && consentText.includes('alice'), consentText.slice(0, 300));
  await page.screenshot({ path: path.join(dir, 'consent.png') });
  const consentCookie = (await page.context().cookies()).find((c) => c.name === 'tollgate_consent');
  check('consent page sets tollgate_consent (HttpOnly, SameSite=Lax, Path=/)',
    consentCookie && consentCookie.httpOnly && consentCookie.sameSite === 'Lax' && consentCookie.path === '/',
    JSON.stringify(consentCookie));
  check('Authorize form carries a csrf field', (await page.locator('input[name=csrf]').count()) === 1);
  // Another site's form (no csrf) is refused and leaves the link usable.
  const forged = await fetch(consentUrl, { method: 'POST', redirect: 'manual' });
  check('Authorize without csrf is refused with 403', forged.status === 403, String(forged.status));
  await Promise.all([page.waitForURL(`${issuer}/**`), page.click('button[type=submit]')]);
  check('Authorize lands on the provider', page.url().startsWith(issuer), page.url());
  await page.fill('input[name=login]', 'alice@interop');
  await page.fill('input[name=password]', 'anything');
  await page.click('button[type=submit]');
  await page.waitForLoadState();
  if (page.url().startsWith(issuer)) {
    // The provider's consent screen.
    await Promise.all([page.waitForURL(`http://127.0.0.1:${webPort}/**`), page.click('button[type=submit]')]);
  }
  const doneText = await page.textContent('body');
  check('callback page tells the user to return to the workflow', /return/i.test(doneText) && page.url().includes('/oauth/callback'), `${page.url()} ${doneText.slice(0, 200)}`);
  check('PKCE was required and used (one code grant succeeded)', codeGrants === 1, `code grants: ${codeGrants}`);

  // 3. The runner's call now carries alice's token.
  const [second] = await pythonGet(proxyUrl, apiUrl);
  check('injected call succeeds (Python requests)', second.status === 200 && second.body.sub === 'alice@interop', JSON.stringify(second));
  check('Proxy-Authorization not forwarded', second.body.proxy_auth_seen === false);
  const viaCurl = await curlGet(proxyUrl, apiUrl);
  check('injected call succeeds (curl -x)', viaCurl.status === 200 && JSON.parse(viaCurl.body).sub === 'alice@interop', JSON.stringify(viaCurl));

  // 3b. HTTPS through CONNECT: each client configured only through the standard proxy and CA
  //     environment variables, trusting tollgate's CA in addition to the system roots.
  const tgCa = cli(['ca', 'export', '--data', data]);
  writeFileSync(path.join(dir, 'tollgate-ca.pem'), tgCa);
  const bundle = path.join(dir, 'bundle.pem');
  const systemRoots = '/etc/ssl/certs/ca-certificates.crt';
  writeFileSync(bundle, (existsSync(systemRoots) ? readFileSync(systemRoots, 'utf8') : '') + tgCa);
  const proxyEnv = {
    ...process.env,
    HTTPS_PROXY: `http://alice:${runner}@${tg.proxy}`,
    https_proxy: `http://alice:${runner}@${tg.proxy}`,
    NO_PROXY: '', no_proxy: '',
    SSL_CERT_FILE: bundle, CURL_CA_BUNDLE: bundle, REQUESTS_CA_BUNDLE: bundle,
    NODE_EXTRA_CA_CERTS: path.join(dir, 'tollgate-ca.pem'),
  };
  const httpsUrl = `https://localhost:${apiTlsPort}/whoami`;
  const sub = (out) => { try { return JSON.parse(out).sub; } catch { return `unparsable: ${out}`; } };
  const curlOut = await run('curl', ['-sS', httpsUrl], { env: proxyEnv }).catch((e) => ({ stdout: String(e) }));
  check('curl over https (HTTPS_PROXY, CURL_CA_BUNDLE) gets the injected token', sub(curlOut.stdout) === 'alice@interop', curlOut.stdout);
  const pyOut = await run('python3', ['-c', 'import requests,sys; r = requests.get(sys.argv[1], timeout=20); print(r.text)', httpsUrl], { env: proxyEnv })
    .catch((e) => ({ stdout: String(e) }));
  check('Python requests over https (HTTPS_PROXY, REQUESTS_CA_BUNDLE) gets the injected token', sub(pyOut.stdout) === 'alice@interop', pyOut.stdout);
  const nodeCode = `
import { EnvHttpProxyAgent, setGlobalDispatcher, fetch } from 'undici';
setGlobalDispatcher(new EnvHttpProxyAgent());
const r = await fetch(process.argv[2]);
console.log(await r.text());
`;
  const nodeScript = path.join(path.dirname(new URL(import.meta.url).pathname), '.fetch-probe.mjs');
  writeFileSync(nodeScript, nodeCode);
  cleanups.push(() => import('node:fs').then((fs) => fs.rmSync(nodeScript, { force: true })));
  const nodeOut = await run('node', [nodeScript, httpsUrl], { env: proxyEnv }).catch((e) => ({ stdout: String(e) }));
  check('Node fetch (undici EnvHttpProxyAgent, NODE_EXTRA_CA_CERTS) gets the injected token', sub(nodeOut.stdout) === 'alice@interop', nodeOut.stdout);

  // 4. After expiry: one refresh, the call succeeds.
  await sleep((ACCESS_TTL + 1) * 1000);
  const before = refreshGrants;
  const [third] = await pythonGet(proxyUrl, apiUrl);
  check('call after expiry succeeds through a refresh', third.status === 200, JSON.stringify(third));
  check('exactly one refresh', refreshGrants - before === 1, `refreshes: ${refreshGrants - before}`);

  // 5. Parallel requests at expiry: one refresh, all succeed, the grant is not revoked by
  //    refresh-token reuse detection.
  await sleep((ACCESS_TTL + 1) * 1000);
  const beforeParallel = refreshGrants;
  const results = await pythonGet(proxyUrl, apiUrl, 12);
  const ok = results.filter((r) => r.status === 200).length;
  check('12 parallel requests at expiry all succeed', ok === 12, JSON.stringify(results.map((r) => r.status)));
  check('parallel requests caused exactly one refresh', refreshGrants - beforeParallel === 1, `refreshes: ${refreshGrants - beforeParallel}`);
  await sleep((ACCESS_TTL + 1) * 1000);
  const [after] = await pythonGet(proxyUrl, apiUrl);
  check('grant still alive afterwards (no reuse detection triggered)', after.status === 200 && grantRevocations === 0, `${JSON.stringify(after)} revocations=${grantRevocations}`);

  // 6. Another org's caller never gets alice's token.
  const other = cli(['token', 'mint', '--data', data, '--org', 'other', '--user', 'alice']).trim();
  const [cross] = await pythonGet(`http://alice:${other}@${tg.proxy}`, apiUrl);
  check('caller of another org is not injected', cross.status === 403 || (cross.status === 401 && cross.body.error !== undefined && cross.body.sub === undefined), JSON.stringify(cross));

  // 7. No secret in tollgate's logs.
  const logs = tg.logs();
  check('no token or secret in the logs', !logs.includes('interop-client-secret') && !logs.includes(runner.slice(-20)));
}

await runSuite('interop', main);
