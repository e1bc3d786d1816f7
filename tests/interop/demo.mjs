// `tollgate demo` as a new user takes the tour: run the one printed curl command (401 with a
// consent URL), open the URL in headless Chromium, click Authorize on tollgate's page and
// Approve on the demo's test-grade provider, run the same command again (the API answers who
// called), then Ctrl-C (SIGINT) removes the demo's temporary directory.
//
//   node tests/interop/demo.mjs            (needs: cargo build, chromium, curl)
//
// Prints "demo: N passed, N failed" last; exits non-zero on any failure.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { check, launchChromium, runSuite, startDemo } from './lib/harness.mjs';

const run = promisify(execFile);

async function curlJson(command) {
  const { stdout } = await run(command[0], command.slice(1));
  return JSON.parse(stdout);
}

async function main() {
  const demo = await startDemo();
  check('the demo labels its provider and API test-grade', demo.output().includes('TEST-GRADE'));
  check('the demo runs in a temporary directory', existsSync(`${demo.dir}/policies/demo.toml`), demo.dir);

  const first = await curlJson(demo.command);
  check('the first call is 401 authorization_required', first.error === 'authorization_required',
    JSON.stringify(first));
  check('the first call carries a consent URL', typeof first.consent_url === 'string');

  const browser = await launchChromium();
  const page = await browser.newPage();
  await page.goto(first.consent_url);
  check('the consent page names the demo app', (await page.content()).includes('Demo API'));
  const provider = new URL(demo.output().match(/demo OAuth provider\s+(\S+)/)[1]);
  await Promise.all([page.waitForURL(`${provider.origin}/**`), page.click('button[type=submit]')]);
  check('Authorize leads to the demo provider', (await page.content()).includes('TEST-GRADE'));
  const web = new URL(first.consent_url).origin;
  await Promise.all([page.waitForURL(`${web}/oauth/callback**`), page.click('#approve')]);
  const done = await page.content();
  check('the callback page says the app is authorized', done.includes('Demo API is authorized'), done.slice(0, 300));

  const second = await curlJson(demo.command);
  check('the same call then reaches the API as alice', second.caller === 'alice', JSON.stringify(second));

  demo.child.kill('SIGINT');
  const code = await Promise.race([demo.exited, new Promise((r) => setTimeout(() => r('timeout'), 30000))]);
  check('Ctrl-C stops the demo cleanly', code === 0, String(code));
  check('Ctrl-C removes the temporary directory', !existsSync(demo.dir), demo.dir);
}

await runSuite('demo', main);
