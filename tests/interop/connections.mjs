// Interoperability: "My connections" (`GET /connections`) in headless Chromium (puppeteer-core),
// with a real OpenID Provider (oidc-provider) as both the sign-in IdP (`--login oidc`, the org
// from its `org` claim) and the OAuth server of the app being connected (refresh tokens, RFC
// 7009 revocation enabled).
//
// alice signs in, sees the app as needing consent, connects through the provider's consent,
// a real client (curl through the proxy) uses her token, the page shows her connected with
// the grant's times, she disconnects, the provider's revocation endpoint is called (counted at
// the provider) and the page says the provider confirmed. Every page state is saved with
// screenshot() under target/screenshots/, once more at a phone's width (390 px).
//
//   node tests/interop/connections.mjs            (needs: cargo build, chromium, curl)
//
// Prints "connections: N passed, N failed" last; exits non-zero on any failure.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  applyInteropApp, check, cli, freePort, launchBrowser, runSuite, screenshot, startIdp,
  startTollgateSigningIn, startUserinfoApi,
} from './lib/harness.mjs';

const run = promisify(execFile);
const ACCOUNTS = { alice: { org: 'acme' } };

// Clicks the submit button matching `selector` and waits for the page it leads to.
async function submit(page, selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}

// At the IdP's development screens: signs in as `login` if asked, then approves every consent
// screen, until the browser is back on `web`.
async function throughIdp(page, issuer, web, login) {
  for (let i = 0; i < 4 && page.url().startsWith(issuer); i += 1) {
    if (await page.$('input[name=login]')) {
      await page.type('input[name=login]', login);
      await page.type('input[name=password]', 'anything');
    }
    await submit(page, 'button[type=submit]');
  }
  if (!page.url().startsWith(web)) throw new Error(`still at the IdP: ${page.url()}`);
}

// The state of `app` on the page, as its data-state attribute says.
async function stateOf(page, app) {
  return page.$eval(`#app-${app} ~ p[data-state]`, (e) => e.dataset.state).catch(() => null);
}

const text = (page) => page.evaluate(() => document.body.innerText);

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-connections-'));
  const webPort = await freePort();
  const web = `http://127.0.0.1:${webPort}`;

  // --- the IdP and OAuth server, counting the revocation requests it receives -------------
  const revocations = [];
  const { issuer, port: idpPort } = await startIdp(web, ACCOUNTS, {
    refreshTokens: true,
    revocation: true,
    onRequest: (req, res) => {
      if (req.method === 'POST' && req.url.startsWith('/token/revocation')) {
        res.on('finish', () => revocations.push(res.statusCode));
      }
    },
  });
  const apiPort = await startUserinfoApi(issuer);

  // --- tollgate: --login oidc at the IdP, the app with its revocation endpoint ------------
  const { tg, data, admin } = await startTollgateSigningIn(dir, webPort, issuer, idpPort, [apiPort]);
  applyInteropApp(dir, web, admin, {
    issuer, clientId: 'tollgate-app', clientSecret: 'app-client-secret',
    scopes: ['openid', 'offline_access', 'api:read'], revocation: true,
  });
  const runner = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'alice']).trim();
  const call = async () => {
    const { stdout } = await run('curl', ['-s', '-x', `http://alice:${runner}@${tg.proxy}`,
      `http://localhost:${apiPort}/whoami`]);
    try { return JSON.parse(stdout); } catch { return { unparsable: stdout }; }
  };

  const browser = await launchBrowser();
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();

  // 1. Not signed in: /connections goes through the IdP's sign-in and comes back.
  await page.goto(`${web}/connections`, { waitUntil: 'load' });
  check('an anonymous visit is sent to the IdP to sign in', page.url().startsWith(issuer), page.url());
  await throughIdp(page, issuer, web, 'alice');
  check('after signing in, alice is back on /connections', new URL(page.url()).pathname === '/connections', page.url());
  let body = await text(page);
  check('the page names alice and her org', body.includes('Signed in as alice of acme'), body.slice(0, 300));
  check('the app needs consent, said in words', await stateOf(page, 'interop') === 'needs_consent'
    && body.includes('needs your consent'), body.slice(0, 400));
  await screenshot(page, 'connections-needs-consent');

  // 2. Connect: tollgate's consent page, then the provider's consent, then back.
  await submit(page, '#app-interop ~ form[action$="/connect"] button[type=submit]');
  check('Connect leads to the consent page', new URL(page.url()).pathname.startsWith('/consent/'), page.url());
  await screenshot(page, 'connections-consent-page');
  await submit(page, 'form[method=post] button[type=submit]');
  await throughIdp(page, issuer, web, 'alice');
  body = await text(page);
  check('the authorization completes', new URL(page.url()).pathname === '/oauth/callback', `${page.url()} ${body.slice(0, 200)}`);

  // 3. A real client uses the token through the proxy.
  const used = await call();
  check('curl through the proxy now calls the API as alice', used.sub === 'alice', JSON.stringify(used));

  // 4. The page shows the connection.
  await page.goto(`${web}/connections`, { waitUntil: 'load' });
  body = await text(page);
  check('the page shows alice connected', await stateOf(page, 'interop') === 'connected', body.slice(0, 400));
  check('... with the granted scopes', /Scopes\s+.*api:read/.test(body), body);
  check('... when the token expires and when it was last used', /Expires\s+\d{4}-/.test(body) && /Last used\s+\S/.test(body), body);
  console.log(`  (last used: ${(body.match(/Last used\s+(.*)/) || [])[1]})`);
  await screenshot(page, 'connections-connected');

  // 5. At a phone's width: readable, nothing wider than the screen.
  const phone = await ctx.newPage();
  await phone.setViewport({ width: 390, height: 844, isMobile: true, hasTouch: true });
  await phone.goto(`${web}/connections`, { waitUntil: 'load' });
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  check('at 390 px wide the page does not scroll sideways', width <= 390, `scrollWidth ${width}`);
  await screenshot(phone, 'connections-phone');
  await phone.close();

  // 6. Disconnect: revoked at the provider, and the page says it confirmed.
  await submit(page, '#app-interop ~ form[action$="/disconnect"] button[type=submit]');
  body = await text(page);
  check('the page says the provider confirmed the revocation',
    body.includes('The provider confirmed the revocation'), body.slice(0, 400));
  check('the provider\'s revocation endpoint was called (refresh and access token), answering 200',
    revocations.length === 2 && revocations.every((s) => s === 200), JSON.stringify(revocations));
  check('the app needs consent again', await stateOf(page, 'interop') === 'needs_consent');
  await screenshot(page, 'connections-disconnected');
  const after = await call();
  check('the client is asked to consent again', after.error === 'authorization_required', JSON.stringify(after));

  const logs = tg.logs();
  check('no secret in tollgate\'s logs', !logs.includes('login-client-secret') && !logs.includes('app-client-secret'));
}

await runSuite('connections', main);
