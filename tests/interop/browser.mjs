// The demo SPA in a real browser (Debian's Chromium, headless, driven by
// playwright-core), through bff-proxy:
//
//   node browser.mjs <proxy base URL> <screenshot folder> <access-token lifetime ms>
//
// Log in, call the API, wait past the access token's expiry, call again (a new token
// upstream, a rotated cookie), a second tab calling at the same moment as the first
// after expiry (nobody is logged out), log out. A screenshot per step. Prints
// "BROWSER OK" and exits 0 when every step held.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const [base, shots, lifetimeArg] = process.argv.slice(2);
const lifetime = Number(lifetimeArg || 4000);
fs.mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let step = 0;
const pages = [];
const shot = (page, name) => page.screenshot({ path: `${shots}/${String(++step).padStart(2, '0')}-${name}.png`, fullPage: true });
const waitText = (page, selector, pattern, timeout = 15000) => page.waitForFunction(
  ([s, p]) => new RegExp(p).test(document.querySelector(s)?.textContent || ''),
  [selector, pattern], { timeout });
const sessionCookie = async (context) => (await context.cookies())
  .filter((c) => c.name.startsWith('__Host-Http-bff') && !c.name.includes('-login-'))
  .map((c) => c.value).join('');
// Presses the API button; returns the fingerprint of the token the upstream saw.
const callApi = async (page) => {
  await page.evaluate(() => { document.getElementById('echo').textContent = ''; });
  await page.click('#call');
  await waitText(page, '#echo', '^HTTP');
  const text = await page.textContent('#echo');
  if (!text.startsWith('HTTP 200')) throw new Error(`API call failed: ${text}`);
  return JSON.parse(text.slice(text.indexOf('\n') + 1)).bearer.fingerprint;
};

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages.push(page);
  await page.goto(base);
  await waitText(page, '#status', 'Not logged in');
  await shot(page, 'start');

  await page.click('#login');
  await waitText(page, '#status', '^Logged in');
  await shot(page, 'logged-in');

  const first = await callApi(page);
  const cookieBefore = await sessionCookie(context);
  await shot(page, 'api-call');

  await page.waitForTimeout(lifetime + 500);
  const second = await callApi(page);
  await shot(page, 'api-call-after-expiry');
  if (second === first) throw new Error('the upstream saw the same token after the expiry');
  if ((await sessionCookie(context)) === cookieBefore) throw new Error('the session cookie was not rotated');

  const tab = await context.newPage();
  pages.push(tab);
  await tab.goto(base);
  await waitText(tab, '#status', '^Logged in');
  await page.waitForTimeout(lifetime + 500);
  const [a, b] = await Promise.all([callApi(page), callApi(tab)]);
  await shot(page, 'tab-1-after-concurrent-refresh');
  await shot(tab, 'tab-2-after-concurrent-refresh');
  if (a !== b) throw new Error('the two tabs got different tokens from one refresh');

  await page.click('#logout');
  // Some providers ask to confirm the logout.
  const confirm = page.locator('button[name="logout"][value="yes"]');
  await page.waitForLoadState('load');
  if (!page.url().startsWith(base) && await confirm.count() > 0) {
    await shot(page, 'logout-confirmation');
    await confirm.click();
  }
  await page.waitForURL(`${base}/`, { timeout: 15000 });
  await waitText(page, '#status', 'Not logged in');
  await shot(page, 'logged-out');
  console.log('BROWSER OK');
} catch (err) {
  console.error(err);
  for (const p of pages) {
    await shot(p, 'failure').catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
