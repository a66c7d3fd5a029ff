// Drives DataHub's map and publishing pages in Debian's Chromium (playwright-core; no
// browser is downloaded) like a planner and a GIS editor would, and prints what it saw
// as JSON for tests/web_blackbox.rs to assert. Screenshots go to OUT_DIR.
// Usage: node web-check.js BASE_URL TOKEN SHAPEFILE_ZIP INTERNAL_LAYER OUT_DIR
const { chromium } = require('playwright-core');
const fs = require('fs');
const path = require('path');

(async () => {
  const [base, token, zip, internal, out] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--disable-background-networking'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e}`));
  page.on('requestfailed', (r) => errors.push(`failed ${r.url()}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  const res = {};
  // page.waitForFunction evaluates strings, which the pages' CSP (rightly) forbids.
  const waitFor = async (fn, arg, ms = 30000) => {
    const until = Date.now() + ms;
    for (;;) {
      if (await page.evaluate(fn, arg).catch(() => false)) return;
      if (Date.now() > until) throw new Error(`timed out waiting for ${fn}`);
      await page.waitForTimeout(100);
    }
  };
  const shot = (name) => page.screenshot({ path: path.join(out, `${name}.png`) });
  const idle = () => page.evaluate(() => new Promise((ok) => {
    const m = window.datahub.map;
    if (m.loaded() && m.areTilesLoaded()) setTimeout(ok, 300); else m.once('idle', () => setTimeout(ok, 100));
  }));

  // 1. The map loads; the catalogue lists the demo layers, grouped by ministry.
  const t0 = Date.now();
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await waitFor(() => window.datahub && window.datahub.ready);
  res.load_ms = Date.now() - t0;
  res.timing = await page.evaluate(() => ({
    dom: Math.round(performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd),
    ready: Math.round(window.datahub.readyAt),
  }));
  // A second visit (the browser has MapLibre's code cached, as a planner's would).
  const t1 = Date.now();
  await page.reload({ waitUntil: 'load' });
  await waitFor(() => window.datahub && window.datahub.ready);
  res.reload_ms = Date.now() - t1;
  res.catalog = await page.$$eval('.layer', (els) => els.map((e) => e.dataset.layer));
  res.ministries = await page.$$eval('.ministry h3', (els) => els.map((e) => e.textContent));
  res.lang = await page.evaluate(() => document.documentElement.lang);
  res.zone_labels = await page.$$eval('.zone-label', (els) => els.map((e) => e.textContent).filter(Boolean).length);

  // 2. Turning a layer on draws its features.
  await page.check('#chk-reportes');
  await idle();
  res.rendered_reportes = await page.evaluate(() => window.datahub.map.queryRenderedFeatures({ layers: ['lyr-reportes-circle'] }).length);
  await shot('map-layers');

  // 3. Clicking a feature opens its popup with its attributes.
  const target = await page.evaluate(() => {
    const m = window.datahub.map;
    const f = m.queryRenderedFeatures({ layers: ['lyr-reportes-circle'] })
      .find((x) => { const p = m.project(x.geometry.coordinates); return p.x > 80 && p.y > 80 && p.x < m.getCanvas().clientWidth - 80 && p.y < m.getCanvas().clientHeight - 80; });
    const p = m.project(f.geometry.coordinates);
    const r = m.getCanvas().getBoundingClientRect();
    return { id: f.id, x: r.left + p.x, y: r.top + p.y };
  });
  await page.mouse.click(target.x, target.y);
  await page.waitForSelector('.maplibregl-popup table.attrs', { timeout: 10000 });
  res.popup = await page.$eval('.maplibregl-popup table.attrs', (t) => ({
    feature: t.dataset.feature,
    rows: Object.fromEntries([...t.querySelectorAll('tr')].map((r) => [r.querySelector('th').textContent, r.querySelector('td').textContent])),
  }));
  res.popup_expected = await page.evaluate(async (id) => (await (await fetch(`/collections/reportes/items/${id}`)).json()).properties, res.popup.feature);
  await shot('popup');
  await page.keyboard.press('Escape');

  // 4. Layer details: metadata, history, downloads.
  await page.click('.layer[data-layer="reportes"] button[data-act="info"]');
  await page.waitForSelector('#details-body h2');
  res.details = await page.$eval('#details-body', (d) => ({ title: d.querySelector('h2').textContent, downloads: d.querySelectorAll('ul li a').length, text: d.textContent }));
  await shot('details');
  await page.click('#details-close');

  // 5. Anonymous visitors do not see the internal layer; a signed-in ministry user does.
  res.internal_anonymous = await page.$$eval(`.layer[data-layer="${internal}"]`, (e) => e.length);
  await page.click('#signin');
  await page.fill('#token', token);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector(`.layer[data-layer="${internal}"]`, { timeout: 10000 });
  res.internal_signed_in = await page.$$eval(`.layer[data-layer="${internal}"]`, (e) => e.length);
  res.cookie_http_only = (await context.cookies()).filter((c) => c.name === 'datahub_session').map((c) => c.httpOnly);
  res.token_in_storage = await page.evaluate((tk) => JSON.stringify({ ...localStorage }).includes(tk) || document.cookie.includes(tk), token);

  // 6. Neighbourhood view: a choropleth whose legend is the aggregate API's.
  await page.click('#tab-zones');
  await page.selectOption('#zones', 'colonias');
  await page.selectOption('#zlayer', 'reportes');
  await page.selectOption('#zstat', 'count');
  await page.click('#zdraw');
  await page.waitForSelector('#zlegend .legend-item');
  await idle();
  res.legend = await page.$$eval('#zlegend .legend-item[data-class]', (els) => els.map((e) => ({ min: +e.dataset.min, max: +e.dataset.max, text: e.textContent })));
  res.choropleth_zones = await page.evaluate(() => new Set(window.datahub.map.queryRenderedFeatures({ layers: ['choro-fill'] }).map((f) => f.id)).size);
  res.api_legend = await page.evaluate(async () => (await (await fetch('/api/analysis/legend?zones=colonias&layer=reportes&stat=count&method=quantile')).json()).classes);
  res.api_aggregate = await page.evaluate(async () => (await (await fetch('/api/analysis/aggregate?zones=colonias&layer=reportes&stat=count')).json()).rows.map((z) => z.count));
  res.csv_link = await page.$eval('#zcsv', (a) => a.getAttribute('href'));
  await shot('choropleth');
  await page.evaluate(() => document.querySelectorAll('.maplibregl-popup').forEach((p) => p.remove()));
  // Click a zone: its profile across the visible layers.
  const zone = await page.evaluate(() => {
    const m = window.datahub.map;
    const c = m.getCanvas();
    const r = c.getBoundingClientRect();
    const pt = { x: c.clientWidth / 2, y: c.clientHeight / 2 };
    const f = m.queryRenderedFeatures([pt.x, pt.y], { layers: ['choro-fill'] })[0];
    const ll = m.unproject([pt.x, pt.y]);
    return { id: f && f.id, x: r.left + pt.x, y: r.top + pt.y, lon: ll.lng, lat: ll.lat };
  });
  await page.mouse.click(zone.x, zone.y);
  await page.waitForSelector('#zprofile h3');
  res.profile = await page.$eval('#zprofile', (p) => ({ title: p.querySelector('h3').textContent, rows: [...p.querySelectorAll('tr th')].map((x) => x.textContent) }));
  res.profile_api = await page.evaluate(async (id) => (await (await fetch(`/api/analysis/profile?zones=colonias&zone=${id}`)).json()).zone, zone.id);
  // "Nearest" from a clicked point.
  await page.check('#nearmode');
  await page.mouse.click(zone.x, zone.y);
  await page.waitForSelector('#zprofile ol li');
  res.nearest = await page.$$eval('#zprofile ol li', (li) => li.map((x) => x.textContent.split(' ')[0].replace('#', '')));
  res.nearest_api = await page.evaluate(async (z) => (await (await fetch(`/api/analysis/nearest?layer=reportes&lon=${z.lon}&lat=${z.lat}&k=5`)).json()).features.map((f) => String(f.id)), zone);
  await page.uncheck('#nearmode');

  // 7. Phone width: the page still works.
  await page.setViewportSize({ width: 390, height: 800 });
  await page.waitForTimeout(300);
  await shot('phone');
  res.phone_map_height = await page.$eval('#map', (m) => m.getBoundingClientRect().height);
  await page.setViewportSize({ width: 1280, height: 800 });

  // 8. Publishing: a real Shapefile through the form, its job, its report, then the map.
  await page.goto(`${base}/publicar`, { waitUntil: 'load' });
  await page.waitForSelector('#upload-form:not([hidden])', { timeout: 10000 });
  await page.setInputFiles('#file', zip);
  await page.fill('#id', 'silvestres-web');
  await page.fill('#title', 'Áreas silvestres (web)');
  await page.selectOption('#access', 'public');
  await page.fill('#keywords', 'naturaleza, prueba');
  await page.click('#send');
  await page.waitForSelector('#view-map, #job-error', { timeout: 60000 });
  res.publish_error = await page.$$eval('#job-error', (e) => e.map((x) => x.textContent));
  await page.waitForSelector('#grade', { timeout: 30000 });
  res.publish_report = await page.$eval('#report', (r) => r.textContent);
  // Missing metadata is fixed in place: the description, through the report's form.
  res.fix_form = (await page.$$('form.fix[data-code="metadata.description"]')).length;
  res.score_before = await page.$eval('#grade', (g) => g.textContent);
  await page.fill('#fix-description', 'Áreas silvestres de prueba, cargadas desde el navegador.');
  await page.click('form.fix[data-code="metadata.description"] button');
  await waitFor(() => !document.querySelector('[data-check="metadata.description"]') && document.querySelector('#grade'));
  res.score_after = await page.$eval('#grade', (g) => g.textContent);
  res.description_saved = await page.evaluate(async () => (await (await fetch('/api/layers/silvestres-web')).json()).description);
  await page.screenshot({ path: path.join(out, 'publish-report.png'), fullPage: true });
  await page.click('#view-map');
  await waitFor(() => window.datahub && window.datahub.ready);
  // Tiles of the first view still loading would be cancelled by the jump (failed requests).
  await idle();
  await page.evaluate(() => { const m = window.datahub.map; m.jumpTo({ center: [-113.2, 37.0], zoom: 6 }); });
  await idle();
  res.new_layer_visible = await page.evaluate(() => window.datahub.state.order.includes('silvestres-web'));
  res.new_layer_rendered = await page.evaluate(() => window.datahub.map.queryRenderedFeatures({ layers: ['lyr-silvestres-web-fill'] }).length);
  await shot('published-on-map');

  // 9. A new version of the same layer through the form, then a rollback to version 1.
  await page.goto(`${base}/publicar?layer=silvestres-web`, { waitUntil: 'load' });
  await page.waitForSelector('#upload-form:not([hidden])', { timeout: 10000 });
  await page.waitForSelector('[data-restore]', { state: 'attached', timeout: 10000 }).catch(() => {});
  res.target_selected = await page.$eval('#target', (s) => s.value);
  await page.setInputFiles('#file', zip);
  await page.fill('#note', 'segunda carga');
  await page.click('#send');
  await page.waitForSelector('#view-map, #job-error', { timeout: 60000 });
  res.second_report = await page.$eval('#report h3', (h) => h.textContent);
  await page.waitForSelector('[data-restore="1"]');
  await page.click('[data-restore="1"]');
  await waitFor(() => document.querySelector('#report') && document.querySelector('#report').textContent.includes('v1 → v3'), null, 20000);
  res.rollback = await page.$eval('#report', (r) => r.textContent);
  res.versions_after = await page.evaluate(async () => (await (await fetch('/api/layers/silvestres-web/versions')).json()).versions.map((v) => [v.version, v.note]));

  // 10. A table with no coordinates joined to the colonias through the form: names
  // written in capitals without accents, and one colonia that does not exist.
  const names = await page.evaluate(async () => (await (await fetch('/collections/colonias/items?limit=100')).json()).features.map((f) => f.properties.nombre));
  const csv = path.join(out, 'hogares.csv');
  const upper = (n) => n.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toUpperCase();
  fs.writeFileSync(csv, `colonia,hogares\n${names.map((n, i) => `${upper(n)},${100 + i}`).join('\n')}\nColonia Inexistente,5\n`);
  await page.goto(`${base}/publicar`, { waitUntil: 'load' });
  await page.waitForSelector('#upload-form:not([hidden])', { timeout: 10000 });
  await page.setInputFiles('#file', csv);
  await page.fill('#id', 'hogares-web');
  await page.fill('#title', 'Hogares por colonia (web)');
  await page.selectOption('#access', 'public');
  await page.selectOption('#join_layer', 'colonias');
  await waitFor(() => [...document.querySelectorAll('#join_field option')].some((o) => o.value === 'nombre'));
  await page.selectOption('#join_field', 'nombre');
  await page.click('#send');
  await page.waitForSelector('#view-map, #job-error', { timeout: 60000 });
  res.table_error = await page.$$eval('#job-error', (e) => e.map((x) => x.textContent));
  res.table_colonias = names.length;
  res.table_join_summary = await page.$eval('#join-summary', (p) => p.textContent);
  res.table_unmatched = await page.$eval('#join-unmatched', (u) => u.textContent);
  res.table_job_state = await page.$eval('#job-state', (s) => s.textContent);
  await page.screenshot({ path: path.join(out, 'publish-table-join.png'), fullPage: true });

  // 11. A budget with no place, through the form's "Sin lugar" box; the map's catalogue
  // lists it as a table (details, no checkbox) and does not draw it.
  const budget = path.join(out, 'presupuesto.csv');
  fs.writeFileSync(budget, 'partida,concepto,monto\n1000,Servicios personales,1200000\n2000,Materiales,350000\n');
  await page.goto(`${base}/publicar`, { waitUntil: 'load' });
  await page.waitForSelector('#upload-form:not([hidden])', { timeout: 10000 });
  await page.setInputFiles('#file', budget);
  await page.fill('#id', 'presupuesto-web');
  await page.fill('#title', 'Presupuesto (web)');
  await page.selectOption('#access', 'public');
  await page.check('#no_geometry');
  await page.click('#send');
  await page.waitForSelector('#view-map, #job-error', { timeout: 60000 });
  res.budget_error = await page.$$eval('#job-error', (e) => e.map((x) => x.textContent));
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await waitFor(() => window.datahub && window.datahub.ready);
  res.budget_card = await page.$$eval('.layer.table[data-layer="presupuesto-web"]', (c) => c.map((x) => ({ text: x.textContent, checkboxes: x.querySelectorAll('input[type=checkbox]').length })));
  res.budget_drawn = await page.evaluate(() => window.datahub.state.order.includes('presupuesto-web'));

  // 12. A draft through the form's "borrador" box: hogares-web again without its first
  // two colonias and with three counts changed. The review panel says what it changes
  // and draws it; publishing it from the panel makes it the served version.
  const draftCsv = path.join(out, 'hogares-borrador.csv');
  fs.writeFileSync(draftCsv, `colonia,hogares\n${names.slice(2).map((n, k) => `${upper(n)},${k < 3 ? 900 + k : 102 + k}`).join('\n')}\nColonia Inexistente,5\n`);
  await page.goto(`${base}/publicar?layer=hogares-web`, { waitUntil: 'load' });
  await page.waitForSelector('#upload-form:not([hidden])', { timeout: 10000 });
  await page.waitForSelector('#versions li', { timeout: 10000 });
  res.draft_panel_before = await page.$eval('#draft-panel', (p) => p.hidden);
  await page.setInputFiles('#file', draftCsv);
  await page.selectOption('#join_layer', 'colonias');
  await waitFor(() => [...document.querySelectorAll('#join_field option')].some((o) => o.value === 'nombre'));
  await page.selectOption('#join_field', 'nombre');
  // The key named: features are then paired by it, and a changed count is "modified".
  await page.fill('#key', 'colonia');
  await page.fill('#note', 'borrador de prueba');
  await page.check('#draft');
  await page.click('#send');
  await page.waitForSelector('#draft-saved, #job-error', { timeout: 60000 });
  res.draft_error = await page.$$eval('#job-error', (e) => e.map((x) => x.textContent));
  res.draft_report = await page.$eval('#report h3', (h) => h.textContent);
  await page.waitForSelector('#draft-panel:not([hidden]) #draft-counts', { timeout: 30000 });
  await page.waitForSelector('#draft-map[data-ready]', { timeout: 30000 });
  res.draft_panel = await page.$eval('#draft-panel', (p) => ({
    info: p.querySelector('#draft-info').textContent.replace(/\s+/g, ' ').trim(),
    changes: p.querySelector('#draft-changes').textContent.replace(/\s+/g, ' ').trim(),
    counts: Object.fromEntries([...p.querySelectorAll('#draft-counts .chg')].map((c) => [c.dataset.kind, +c.dataset.count])),
    canvas: p.querySelectorAll('#draft-map canvas').length,
    publish_disabled: p.querySelector('#draft-publish').disabled,
    why_not: p.querySelector('#draft-why').textContent,
  }));
  res.draft_api = await page.evaluate(async () => {
    const d = await (await fetch('/api/layers/hogares-web/draft')).json();
    return { version: d.version, base: d.base, may_publish: d.may_publish, counts: d.changes && d.changes.counts };
  });
  res.draft_map = await page.evaluate(() => {
    const m = window.datahub.draftMap;
    // Distinct features per kind (a polygon cut by tile edges is queried once per piece).
    const kinds = {};
    for (const f of m.queryRenderedFeatures({ layers: ['changes-fill', 'changes-removed'] })) (kinds[f.properties.datahub_change] ||= new Set()).add(f.id);
    return {
      changes: Object.fromEntries(Object.entries(kinds).map(([k, ids]) => [k, ids.size])),
      draft_features: m.queryRenderedFeatures({ layers: ['draft-fill'] }).length,
    };
  });
  res.draft_versions = await page.$$eval('#versions li', (li) => li.map((x) => ({ draft: x.dataset.draft === 'true', text: x.textContent.replace(/\s+/g, ' ').trim(), restore: !!x.querySelector('[data-restore]') })));
  await page.locator('#draft-panel').screenshot({ path: path.join(out, 'draft-review.png') });
  await page.click('#draft-publish');
  await page.waitForSelector('#draft-done, #draft-error', { timeout: 30000 });
  res.draft_result = await page.$eval('#draft-result', (r) => r.textContent.replace(/\s+/g, ' ').trim());
  res.draft_panel_after = await page.$eval('#draft-panel', (p) => p.hidden);
  res.draft_versions_after = await page.evaluate(async () => (await (await fetch('/api/layers/hogares-web/versions')).json()).versions.map((v) => [v.version, v.current, v.draft, v.note]));

  // 13. The map's "changes since": from a date before the layer existed every feature
  // is new; the legend's counts are the API's, the overlay draws them; "Quitar" clears.
  await page.goto(`${base}/`, { waitUntil: 'load' });
  await waitFor(() => window.datahub && window.datahub.ready);
  await idle();
  await page.click('.layer[data-layer="hogares-web"] button[data-act="info"]');
  await page.waitForSelector('#changes-since');
  res.changes_default_since = await page.$eval('#changes-since', (i) => i.value);
  await page.fill('#changes-since', '2000-01-01');
  await page.click('#changes-show');
  await page.waitForSelector('#changes-legend .changes-counts, #changes-legend .error', { timeout: 30000 });
  await idle();
  res.changes_legend = await page.$eval('#changes-legend', (l) => ({
    text: l.textContent.replace(/\s+/g, ' ').trim(),
    counts: Object.fromEntries([...l.querySelectorAll('.chg')].map((c) => [c.dataset.kind, +c.dataset.count])),
  }));
  res.changes_api = await page.evaluate(async () => (await (await fetch('/collections/hogares-web/changes?since=2000-01-01')).json()).counts);
  res.changes_rendered = await page.evaluate(() => new Set(window.datahub.map.queryRenderedFeatures({ layers: ['changes-fill'] }).map((f) => f.id)).size);
  await shot('changes');
  await page.click('#changes-clear');
  res.changes_cleared = await page.evaluate(() => !window.datahub.map.getSource('changes') && !window.datahub.map.getLayer('changes-fill') && document.querySelector('#changes-legend').textContent.trim() === '');

  res.errors = errors;
  await browser.close();
  console.log(JSON.stringify(res));
})().catch((e) => { console.error(e); process.exit(1); });
