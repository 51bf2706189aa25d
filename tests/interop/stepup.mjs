// Step-up and silent login in a real browser (Debian's Chromium, headless, driven by
// playwright-core), through bff-proxy and the dev IdP with its login form:
//
//   node stepup.mjs <proxy base URL> <screenshot folder>
//
// A silent login (prompt=none) with no IdP session comes back to the SPA with
// ?error=login_required (no error page); a login through the IdP's form; the API
// that needs the second level answers 401 insufficient_user_authentication; the
// SPA's "Step up" button goes to /bff/login?acr_values=…, the IdP asks for the
// one-time code, and back in the SPA the API answers 200. A screenshot per step.
// Prints "STEPUP OK" and exits 0 when every step held.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const [base, shots] = process.argv.slice(2);
fs.mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let step = 0;
let page = null;
const shot = (name) => page.screenshot({ path: `${shots}/${String(++step).padStart(2, '0')}-${name}.png`, fullPage: true });
const waitText = (selector, pattern, timeout = 15000) => page.waitForFunction(
  ([s, p]) => new RegExp(p).test(document.querySelector(s)?.textContent || ''),
  [selector, pattern], { timeout });
const callSecure = async () => {
  await page.evaluate(() => { document.getElementById('echo').textContent = ''; });
  await page.click('#secure');
  await waitText('#echo', '^HTTP');
  return page.textContent('#echo');
};

try {
  const context = await browser.newContext();
  page = await context.newPage();
  await page.goto(base);
  await waitText('#status', 'Not logged in');
  await shot('start');

  // Silent login without an IdP session: back in the SPA with the error, no error page.
  await page.click('#silent');
  await page.waitForURL((u) => u.href.startsWith(base), { timeout: 15000 });
  await waitText('#error', 'login_required');
  await waitText('#status', 'Not logged in');
  if (new URL(page.url()).searchParams.has('error')) throw new Error('the SPA left ?error= in the address bar');
  await shot('silent-login-required');

  // Log in through the dev IdP's form (first level).
  await page.click('#login');
  await page.waitForSelector('button#login[type=submit]');
  if (await page.locator('#otp').count() > 0) throw new Error('the first login asked for the second factor');
  await shot('idp-login-form');
  await page.click('button#login[type=submit]');
  await page.waitForURL((u) => u.href.startsWith(base), { timeout: 15000 });
  await waitText('#status', '^Logged in');
  await waitText('#user', 'urn:example:password');
  await shot('logged-in');

  // The API that needs the second level.
  let text = await callSecure();
  if (!text.startsWith('HTTP 401') || !text.includes('insufficient_user_authentication')) {
    throw new Error(`expected a step-up answer: ${text}`);
  }
  await page.waitForSelector('#stepup:not([hidden])');
  await shot('step-up-needed');

  // Step up: the IdP asks for the one-time code.
  await page.click('#stepup');
  await page.waitForSelector('#otp');
  await shot('idp-second-factor');
  await page.fill('#otp', '123456');
  await page.click('button#login[type=submit]');
  await page.waitForURL((u) => u.href.startsWith(base), { timeout: 15000 });
  await waitText('#status', '^Logged in');
  await waitText('#user', 'urn:example:mfa');
  text = await callSecure();
  if (!text.startsWith('HTTP 200')) throw new Error(`the stepped-up call failed: ${text}`);
  await shot('stepped-up');
  console.log('STEPUP OK');
} catch (err) {
  console.error(err);
  if (page) await shot('failure').catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
