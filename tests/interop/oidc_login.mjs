// Interoperability: sign-in at the pages (`--login oidc`) against a real OpenID Provider
// (oidc-provider, with its development login and consent screens and a static account finder
// for alice and bob), driven with headless Chromium.
//
// A real ticket: alice's runner calls an app's domain through tollgate's proxy and gets
// `401 authorization_required` with a consent URL. Then:
//   - alice signs in at the IdP in a browser and reaches her consent page (the session cookie
//     is HttpOnly, SameSite=Lax); she authorizes, and her runner's call then carries her token;
//   - bob, signed in at the IdP as himself in another browser, opens the same kind of link
//     and gets 403 `consent_user_mismatch`;
//   - after POST /logout the page asks for a sign-in again.
//
//   node tests/interop/oidc_login.mjs            (needs: cargo build, chromium, curl)
//
// Prints "oidc-login: N passed, N failed" last; exits non-zero on any failure.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  applyInteropApp, check, cli, freePort, launchChromium, runSuite, startIdp, startTollgateSigningIn,
  startUserinfoApi,
} from './lib/harness.mjs';

const ACCOUNTS = { alice: { org: 'acme' }, bob: { org: 'acme' } };
const run = promisify(execFile);

// Signs in at the IdP's development screens as `login` (the browser is on its login page),
// then approves tollgate's request if the IdP asks.
async function idpSignIn(page, issuer, login) {
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'anything');
  await Promise.all([page.waitForLoadState(), page.click('button[type=submit]')]);
  if (page.url().startsWith(issuer) && await page.$('button[type=submit]')) {
    await Promise.all([page.waitForURL((u) => !u.href.startsWith(issuer)), page.click('button[type=submit]')]);
  }
}

// Opens `consentUrl` in `page`, signing in as `login` when tollgate asks. A consent page not
// yet wired to the sign-in answers 403 to an anonymous visitor; then the sign-in is started
// at /login?return=... as the redirect would.
async function openSignedIn(page, web, issuer, consentUrl, login) {
  const consentPath = new URL(consentUrl).pathname;
  const seen = [];
  const onResponse = (r) => { if (r.url().includes(consentPath)) seen.push(r.status()); };
  page.on('response', onResponse);
  await page.goto(consentUrl);
  let via = 'redirect';
  if (!page.url().startsWith(issuer)) {
    via = '/login';
    await page.goto(`${web}/login?return=${encodeURIComponent(consentPath)}`);
  }
  if (!page.url().startsWith(issuer)) throw new Error(`no sign-in at the IdP: ${page.url()}`);
  await idpSignIn(page, issuer, login);
  await page.waitForURL((u) => u.pathname === consentPath);
  page.off('response', onResponse);
  return { status: seen[seen.length - 1], via, text: await page.textContent('body') };
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-oidc-login-'));
  const webPort = await freePort();
  const web = `http://127.0.0.1:${webPort}`;

  // --- the IdP (also the OAuth server of the app being consented to) -------------------
  const { issuer, port: idpPort, provider } = await startIdp(web, ACCOUNTS);
  let idTokens = 0;
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.client?.clientId === 'tollgate-login') idTokens += 1;
  });
  const apiPort = await startUserinfoApi(issuer);

  // --- tollgate: --login oidc at the IdP ----------------------------------------------------
  const { tg, data, admin } = await startTollgateSigningIn(dir, webPort, issuer, idpPort, [apiPort]);
  applyInteropApp(dir, web, admin, {
    issuer, clientId: 'tollgate-app', clientSecret: 'app-client-secret', scopes: ['openid', 'api:read'],
  });

  // A real ticket: alice's runner calls the app's domain through the proxy.
  const runner = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'alice']).trim();
  const apiUrl = `http://localhost:${apiPort}/whoami`;
  const call = async () => {
    const { stdout } = await run('curl', ['-s', '-x', `http://alice:${runner}@${tg.proxy}`, apiUrl]);
    try { return JSON.parse(stdout); } catch { return { unparsable: stdout }; }
  };
  const first = await call();
  check('the runner gets 401 authorization_required with a consent URL',
    first.error === 'authorization_required' && String(first.consent_url).startsWith(`${web}/consent/`), JSON.stringify(first));
  const consentUrl = first.consent_url;

  const browser = await launchChromium();

  // 1. Anonymous: the consent page is not shown.
  const anonymous = await browser.newContext();
  const anonPage = await anonymous.newPage();
  const anon = await anonPage.goto(consentUrl);
  check('an anonymous browser does not see the consent page',
    anonPage.url().startsWith(issuer) || (anon.status() === 403 && !(await anonPage.$('form[method=post]'))),
    `${anon.status()} ${anonPage.url()}`);
  await anonymous.close();

  // 2. alice signs in and reaches her consent page.
  const aliceCtx = await browser.newContext();
  const alicePage = await aliceCtx.newPage();
  const alice = await openSignedIn(alicePage, web, issuer, consentUrl, 'alice');
  console.log(`  (sign-in started by ${alice.via})`);
  check('alice, signed in at the IdP, reaches her consent page',
    alice.status === 200 && alice.text.includes('Interop API') && alice.text.includes('alice')
      && Boolean(await alicePage.$('form[method=post] button[type=submit]')),
    `${alice.status} ${alice.text.slice(0, 300)}`);
  check('one ID token was issued to tollgate', idTokens === 1, `ID tokens: ${idTokens}`);
  const session = (await aliceCtx.cookies(web)).find((c) => c.name === 'tollgate_session');
  check('the session cookie is HttpOnly, SameSite=Lax, Path=/, about 8 hours',
    session && session.httpOnly && session.sameSite === 'Lax' && session.path === '/'
      && Math.abs(session.expires - (Date.now() / 1000 + 8 * 3600)) < 120, JSON.stringify(session));

  // 3. bob, signed in as himself, opens alice's link: 403 consent_user_mismatch.
  const bobCtx = await browser.newContext();
  const bobPage = await bobCtx.newPage();
  const bob = await openSignedIn(bobPage, web, issuer, consentUrl, 'bob');
  check('bob gets 403 on alice\'s consent link', bob.status === 403, `${bob.status} ${bob.text.slice(0, 200)}`);
  check('... with the error consent_user_mismatch', bob.text.includes('consent_user_mismatch'), bob.text.slice(0, 300));
  check('... and no Authorize form', !(await bobPage.$('form[method=post]')));
  await bobCtx.close();

  // 4. alice authorizes; her runner's call then carries her token.
  await Promise.all([alicePage.waitForURL(`${issuer}/**`), alicePage.click('form[method=post] button[type=submit]')]);
  if (await alicePage.$('button[type=submit]')) {
    await Promise.all([alicePage.waitForURL(`${web}/**`), alicePage.click('button[type=submit]')]);
  }
  const done = await alicePage.textContent('body');
  check('alice\'s authorization completes', alicePage.url().includes('/oauth/callback') && /return/i.test(done), `${alicePage.url()} ${done.slice(0, 200)}`);
  const second = await call();
  check('alice\'s runner call now carries her token', second.sub === 'alice', JSON.stringify(second));

  // 5. Signing out ends the session.
  const out = await alicePage.request.post(`${web}/logout`);
  check('POST /logout answers 200', out.status() === 200, String(out.status()));
  const after = (await aliceCtx.cookies(web)).find((c) => c.name === 'tollgate_session');
  check('the session cookie is gone after sign-out', !after || after.value === '', JSON.stringify(after));

  const logs = tg.logs();
  check('the org came from the ID token\'s org claim', /signed in at the pages.*user\S*alice.*org\S*acme/.test(logs.replace(/\x1b\[[0-9;]*m/g, '')),
    logs.split('\n').filter((l) => l.includes('signed in')).join('\n'));
  check('no secret in tollgate\'s logs', !logs.includes('login-client-secret') && !logs.includes('app-client-secret')
    && !(session && logs.includes(session.value)));
}

await runSuite('oidc-login', main);
