// The admin console in headless Chromium (puppeteer-core): an admin of acme, signed in by the
// trusted login headers from loopback (`--login header`), creates an app from the catalog,
// edits it, disables, enables, resets and deletes it through the pages' forms (each action
// confirmed), and the console's audit page shows every action. An operator sees the agents
// page and the deny log with a request the proxy really denied. Every page is saved under
// target/screenshots/console-*.png, one at a phone's width (390 px).

import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {
  check, cli, freePort, launchBrowser, runSuite, screenshot, startTollgate,
} from './lib/harness.mjs';

// The catalog's GitHub token endpoints, and a tracker every caller is denied.
const POLICY = `
[[deny]]
hosts = ["tracker.example"]

[[policy]]
name = "saas"
description = "SaaS providers the console's apps use"
route = "direct"
  [[policy.allow]]
  hosts = ["github.com", "api.github.com", "uploads.github.com"]
  ports = [443]
`;

// One absolute-form GET through the proxy at `proxy` (host:port) as `token`: its status.
function proxyGet(proxy, url, token) {
  const [host, port] = proxy.split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({
      host, port: Number(port), method: 'GET', path: url,
      headers: { 'proxy-authorization': `Bearer ${token}`, host: new URL(url).host },
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.end();
  });
}

// Submits the form around `button` and waits for the page it leads to.
async function submit(page, button) {
  await Promise.all([page.waitForNavigation(), page.click(button)]);
}

const text = (page) => page.evaluate(() => document.body.innerText);

await runSuite('console', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tollgate-console-'));
  const policies = path.join(dir, 'policies');
  mkdirSync(policies);
  writeFileSync(path.join(policies, 'console.toml'), POLICY);
  const webPort = await freePort();
  const tg = await startTollgate(dir, policies, webPort, [
    '--login', 'header', '--login-user-header', 'X-User', '--login-org-header', 'X-Org',
    '--login-roles-header', 'X-Roles',
  ]);
  const web = tg.web;

  const browser = await launchBrowser();
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 900 });
  // The platform's login proxy would add these; from loopback tollgate believes them.
  await page.setExtraHTTPHeaders({ 'x-user': 'alice', 'x-org': 'acme', 'x-roles': 'admin' });

  // --- the apps page ------------------------------------------------------------------
  let resp = await page.goto(`${web}/admin`);
  check('GET /admin answers 200 for acme\'s admin', resp.status() === 200, String(resp.status()));
  check('the apps page names the org', (await text(page)).includes('Apps of acme'));
  check('no script on the page', (await page.$$('script')).length === 0);
  const csp = resp.headers()['content-security-policy'] || '';
  check('strict CSP without script', csp.includes("default-src 'none'") && !csp.includes('script-src'), csp);
  await screenshot(page, 'console-apps-empty');

  // --- create from the catalog --------------------------------------------------------
  await Promise.all([page.waitForNavigation(), page.click('a[href="/admin/apps/new"]')]);
  await page.select('#f-provider', 'github');
  await screenshot(page, 'console-create-pick');
  await submit(page, 'button[type=submit]');
  check('the create form is GitHub\'s', (await text(page)).includes('Create an app: GitHub'));
  check('every field has a label', await page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden])')]
    .every((i) => i.labels && i.labels.length === 1)));
  // A refused form first: the messages come back, the secret does not.
  await page.type('#f-id', 'gh');
  await page.type('#f-client_secret', 'console-SECRET-123');
  await page.type('#f-egress_policy', 'nope');
  await submit(page, 'button[type=submit]');
  const refused = await text(page);
  check('a refused create shows the field errors', refused.includes('The app was not created') && refused.includes('egress_policy'), refused.slice(0, 400));
  check('the refused form does not echo the secret', !(await page.content()).includes('console-SECRET-123'));
  await screenshot(page, 'console-create-errors');
  await page.$eval('#f-egress_policy', (e) => { e.value = ''; });
  await page.type('#f-egress_policy', 'saas');
  await page.type('#f-client_id', 'Iv1.console');
  await page.type('#f-client_secret', 'console-SECRET-123');
  await submit(page, 'button[type=submit]');
  check('create lands on the app page', page.url().endsWith('/admin/apps/gh?done=created'), page.url());
  check('the app page says it was created', (await text(page)).includes('App created.'));
  check('the secret is never shown', !(await page.content()).includes('console-SECRET-123'));
  await screenshot(page, 'console-app');

  // --- edit -----------------------------------------------------------------------------
  await page.$eval('#f-domains', (e) => { e.value = 'api.github.com uploads.github.com'; });
  await submit(page, 'form[action="/admin/apps/gh"] button[type=submit]');
  check('edit saves', (await text(page)).includes('App updated.'), page.url());
  check('the new domain shows', (await text(page)).includes('uploads.github.com'));

  // --- disable, enable, reset, delete: each confirmed -------------------------------------
  for (const [action, done] of [['disable', 'App disabled.'], ['enable', 'App enabled.'], ['reset', 'App reset']]) {
    await Promise.all([page.waitForNavigation(), page.click(`a[href="/admin/apps/gh/${action}"]`)]);
    check(`${action} asks first`, (await text(page)).includes(`app gh`) && page.url().endsWith(`/admin/apps/gh/${action}`), page.url());
    await screenshot(page, `console-confirm-${action}`);
    await submit(page, 'button[type=submit]');
    check(`${action} is done`, (await text(page)).includes(done), (await text(page)).slice(0, 300));
  }
  await Promise.all([page.waitForNavigation(), page.click('a[href="/admin/apps/gh/delete"]')]);
  await page.type('#f-confirm', 'gh');
  await screenshot(page, 'console-confirm-delete');
  await submit(page, 'button[type=submit]');
  check('delete returns to the list', page.url().endsWith('/admin?done=delete') && (await text(page)).includes('App deleted.'), page.url());
  check('the app is gone from the list', (await text(page)).includes('No apps yet.'));

  // --- the audit page shows every action ------------------------------------------------
  await page.goto(`${web}/admin/audit`);
  const audit = await text(page);
  for (const a of ['app.create', 'app.update', 'app.disable', 'app.enable', 'app.reset', 'app.delete']) {
    check(`the audit page shows ${a}`, audit.includes(a), audit.slice(0, 600));
  }
  await screenshot(page, 'console-audit');
  await page.type('#f-action', 'app.delete');
  await submit(page, 'form[action="/admin/audit"] button[type=submit]');
  const rows = await page.$$eval('tbody tr', (trs) => trs.map((r) => r.innerText));
  check('the action filter narrows the log', rows.length === 1 && rows[0].includes('app.delete'), JSON.stringify(rows));

  // --- policies and explain -------------------------------------------------------------
  await page.goto(`${web}/admin/policies`);
  await page.type('#f-target', 'https://api.github.com/');
  await submit(page, 'form[action="/admin/policies#explain"] button[type=submit]');
  const explained = await text(page);
  check('explain shows the decision and policy', explained.includes('allowed') && explained.includes('saas'), explained.slice(-400));
  await screenshot(page, 'console-policies');

  // --- a phone: the tables scroll inside their box, the page does not -------------------
  await page.setViewport({ width: 390, height: 844 });
  await page.goto(`${web}/admin/audit`);
  const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  check('at 390 px the page does not scroll sideways', fits);
  await screenshot(page, 'console-audit-390px');
  await page.setViewport({ width: 1200, height: 900 });

  // --- an operator: agents and a real denial in the deny log ----------------------------
  const data = path.join(dir, 'data');
  const runner = cli(['token', 'mint', '--data', data, '--org', 'acme', '--user', 'bob']).trim();
  const status = await proxyGet(tg.proxy, 'http://denied.example/private/path?key=hidden', runner);
  check('the proxy denies the request', status === 403, String(status));
  const tracked = await proxyGet(tg.proxy, 'http://tracker.example/pixel', runner);
  check('the [[deny]] rule denies the tracker', tracked === 403, String(tracked));
  await page.setExtraHTTPHeaders({ 'x-user': 'olga', 'x-org': 'ops', 'x-roles': 'operator' });
  resp = await page.goto(`${web}/admin/agents`);
  check('the operator sees the agents page', resp.status() === 200 && (await text(page)).includes('No agent is connected.'));
  await screenshot(page, 'console-agents');
  let denials = '';
  for (let i = 0; i < 50 && !(denials.includes('denied.example') && denials.includes('tracker.example')); i += 1) {
    await page.goto(`${web}/admin/denials`);
    denials = await text(page);
  }
  check('the deny log shows the denial with its reason', denials.includes('denied.example:80/private/path') && denials.includes('bob (acme)'), denials.slice(0, 600));
  check('the deny log never shows the query', !denials.includes('key=hidden'));
  check('the deny log names the deciding rule', /tracker\.example:80\/pixel[\s\S]*console\.toml:2/.test(denials), denials.slice(0, 800));
  await screenshot(page, 'console-denials');
  resp = await page.goto(`${web}/admin/apps/new`);
  check('an operator cannot create apps', resp.status() === 403);
});
