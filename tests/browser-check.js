// Opens DataHub's HTML feature pages in Debian's Chromium (playwright-core; no browser
// is downloaded) and reports, as JSON, how many features each MapLibre preview drew
// and every console error, page error or failed request. Used by tests/ogc_blackbox.rs.
// Usage: node browser-check.js BASE_URL PATH...
const { chromium } = require('playwright-core');

(async () => {
  const [base, ...paths] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'],
  });
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('requestfailed', (r) => errors.push(`failed ${r.url()}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  const drawn = {};
  for (const path of paths) {
    await page.goto(base + path, { waitUntil: 'networkidle' });
    try {
      await page.waitForFunction(() => window.previewMap && window.previewMap.loaded(), null, { timeout: 20000 });
      drawn[path] = await page.evaluate(
        () => new Set(window.previewMap.queryRenderedFeatures()
          .filter((f) => f.source === 'f').map((f) => f.id ?? JSON.stringify(f.properties))).size,
      );
    } catch (e) {
      errors.push(`no map on ${path}: ${e.message.split('\n')[0]}`);
    }
  }
  await browser.close();
  console.log(JSON.stringify({ drawn, errors }));
})().catch((e) => { console.error(e); process.exit(1); });
