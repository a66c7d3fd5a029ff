// DataHub's map for planners: the catalogue (grouped by ministry, searchable), ministry
// layers as vector tiles with automatic styles, popups, layer details, the
// neighbourhood view (choropleth, zone profile, nearest) and sign-in. Plain ES module
// over DataHub's own APIs; MapLibre GL JS is served by DataHub (no CDN).
import {
  t, lang, setLang, applyI18n, fmtValue, esc, api, session, signIn, signOut, baseStyle, changeLayers, changeCounts, CHANGE_KINDS,
} from '/web/app/common.js';

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#bcbd22', '#4d4d4d'];
const RAMP = ['#fef0d9', '#fdcc8a', '#fc8d59', '#e34a33', '#b30000'];
const state = { layers: [], byId: {}, order: [], opacity: {}, colorBy: {}, session: { signed_in: false }, choro: null, changes: null, detailsId: null };
const $ = (id) => document.getElementById(id);
// One list of the "changes since" overlay's style layers, to stack, query and remove them.
const CHANGE_IDS = changeLayers('changes').map((l) => l.id);

// The basemap (see baseStyle), under the neighbourhood boundaries.
const config = await fetch('/api/map-config').then((r) => r.json()).catch(() => ({ boundaries: 'colonias' }));
const map = new maplibregl.Map({
  container: 'map',
  style: baseStyle(config),
  center: [-100.31, 25.67],
  zoom: 11,
  attributionControl: { compact: true },
});
map.addControl(new maplibregl.NavigationControl(), 'top-right');
map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
map.addControl(new maplibregl.GeolocateControl({ trackUserLocation: false }), 'top-right');
window.datahub = { map, state, ready: false };
// Sources can be added only once the style is in; a click may come before that.
const mapLoaded = new Promise((ok) => map.once('load', ok));

const geomKind = (rec) => {
  // A dataset with no place (a budget): listed, detailed and downloadable, not drawn.
  if (!(rec.geometry_types || []).length && rec.feature_count > 0) return 'table';
  const g = (rec.geometry_types || []).join(' ');
  if (g.includes('Polygon')) return 'polygon';
  if (g.includes('Line')) return 'line';
  return 'point';
};
const colorOf = (id) => PALETTE[state.layers.findIndex((l) => l.id === id) % PALETTE.length];
const styleIds = (id) => [`lyr-${id}-fill`, `lyr-${id}-line`, `lyr-${id}-circle`];
const tilesUrl = (id) => `${location.origin}/tiles/${encodeURIComponent(id)}/{z}/{x}/{y}.mvt`;

// ---- URL hash: #zoom/lat/lon/layer,layer (shareable links) ----
function readHash() {
  const [z, lat, lon, layers] = location.hash.replace(/^#/, '').split('/');
  if (z && lat && lon && !Number.isNaN(+z)) map.jumpTo({ zoom: +z, center: [+lon, +lat] });
  return layers ? layers.split(',').filter(Boolean) : [];
}
function writeHash() {
  const c = map.getCenter();
  const h = `#${map.getZoom().toFixed(2)}/${c.lat.toFixed(5)}/${c.lng.toFixed(5)}/${state.order.join(',')}`;
  history.replaceState(null, '', h);
}
map.on('moveend', writeHash);

// ---- catalogue ----
async function loadSession() {
  state.session = await session();
  const b = $('signin');
  b.textContent = state.session.signed_in ? t('signout') : t('signin');
  b.title = state.session.signed_in ? `${state.session.label} — ${state.session.ministry || 'admin'}` : '';
}

async function loadCatalog() {
  const { layers } = await api('/api/layers');
  state.layers = layers;
  state.byId = Object.fromEntries(layers.map((l) => [l.id, l]));
  // Layers that disappeared (signed out) leave the map.
  for (const id of [...state.order]) if (!state.byId[id]) hideLayer(id);
  renderCatalog(layers.map((l) => l.id));
  fillZoneSelects();
}

function renderCatalog(ids) {
  const groups = {};
  for (const id of ids) {
    const l = state.byId[id];
    if (!l) continue;
    const g = l.ministry.name || l.ministry.slug;
    (groups[g] ||= []).push(l);
  }
  const el = $('catalog');
  el.innerHTML = '';
  if (!ids.length) el.innerHTML = `<p>${t('nolayers')}</p>`;
  for (const [name, ls] of Object.entries(groups).sort()) {
    const sec = document.createElement('div');
    sec.className = 'ministry';
    sec.innerHTML = `<h3>${esc(name)}</h3>`;
    for (const l of ls) sec.appendChild(layerCard(l));
    el.appendChild(sec);
  }
}

function layerCard(l) {
  const d = document.createElement('div');
  d.className = 'layer';
  d.dataset.layer = l.id;
  const grade = l.quality ? `<span class="badge g-${esc(l.quality.grade)}" title="${t('quality')}">${esc(lang() === 'es' ? l.quality.grade_es : l.quality.grade.replace('_', ' '))} ${l.quality.score}</span>` : '';
  const fields = (l.fields || []).map((f) => `<option value="${esc(f.name)}">${esc(f.name)}</option>`).join('');
  if (geomKind(l) === 'table') {
    d.classList.add('table');
    d.innerHTML = `
    <div class="top"><span class="swatch table-mark" aria-hidden="true">▦</span><span>${esc(l.title)}</span></div>
    <div class="meta"><span>${t('table')}</span><span>${Number(l.feature_count).toLocaleString(lang() === 'es' ? 'es-MX' : 'en')} ${t('rows')}</span>
      ${grade}<span class="badge a-${esc(l.access)}">${esc(lang() === 'es' ? l.access_es : l.access)}</span></div>
    <div class="tools"><button type="button" data-act="info">${t('details')}</button></div>`;
    d.querySelector('button').addEventListener('click', () => showDetails(l.id));
    return d;
  }
  d.innerHTML = `
    <div class="top"><input type="checkbox" id="chk-${esc(l.id)}" ${state.order.includes(l.id) ? 'checked' : ''}>
      <label for="chk-${esc(l.id)}"><span class="swatch" style="background:${colorOf(l.id)}"></span>${esc(l.title)}</label></div>
    <div class="meta"><span>${t(geomKind(l))}</span><span>${Number(l.feature_count).toLocaleString(lang() === 'es' ? 'es-MX' : 'en')} ${t('features')}</span>
      ${grade}<span class="badge a-${esc(l.access)}">${esc(lang() === 'es' ? l.access_es : l.access)}</span></div>
    <div class="tools">
      <label class="sr" for="op-${esc(l.id)}">${t('opacity')}</label>
      <input type="range" id="op-${esc(l.id)}" min="0.1" max="1" step="0.1" value="${state.opacity[l.id] || 0.8}" title="${t('opacity')}">
      <button type="button" data-act="up" aria-label="${t('up')}">↑</button>
      <button type="button" data-act="down" aria-label="${t('down')}">↓</button>
      <button type="button" data-act="zoom">${t('zoom')}</button>
      <button type="button" data-act="info">${t('details')}</button>
    </div>
    <div class="tools"><label for="cb-${esc(l.id)}" style="margin:0;font-weight:400">${t('colorby')}</label>
      <select id="cb-${esc(l.id)}"><option value="">—</option>${fields}</select></div>`;
  d.querySelector('input[type=checkbox]').addEventListener('change', (e) => (e.target.checked ? showLayer(l.id) : hideLayer(l.id)));
  d.querySelector('input[type=range]').addEventListener('input', (e) => setOpacity(l.id, +e.target.value));
  d.querySelector(`#cb-${CSS.escape(l.id)}`).value = state.colorBy[l.id]?.field || '';
  d.querySelector(`#cb-${CSS.escape(l.id)}`).addEventListener('change', (e) => colorBy(l.id, e.target.value));
  d.querySelectorAll('button').forEach((b) => b.addEventListener('click', () => {
    const act = b.dataset.act;
    if (act === 'zoom' && l.bbox) map.fitBounds([[l.bbox[0], l.bbox[1]], [l.bbox[2], l.bbox[3]]], { padding: 30, maxZoom: 16 });
    if (act === 'info') showDetails(l.id);
    if (act === 'up' || act === 'down') move(l.id, act === 'up' ? 1 : -1);
  }));
  return d;
}

let searchTimer;
$('q').addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $('q').value.trim();
    if (!q) return renderCatalog(state.layers.map((l) => l.id));
    const r = await api(`/api/catalog?q=${encodeURIComponent(q)}&limit=200`).catch(() => ({ results: [] }));
    renderCatalog(r.results.map((x) => x.id));
  }, 200);
});

// ---- layers on the map ----
function paintColor(id) {
  const cb = state.colorBy[id];
  return cb ? cb.expr : colorOf(id);
}

function showLayer(id) {
  const l = state.byId[id];
  if (!l || state.order.includes(id) || geomKind(l) === 'table') return;
  if (!map.getSource(`src-${id}`)) {
    map.addSource(`src-${id}`, { type: 'vector', tiles: [tilesUrl(id)], minzoom: 0, maxzoom: 16, bounds: l.bbox || undefined });
  }
  const op = state.opacity[id] || 0.8;
  const kind = geomKind(l);
  const base = { source: `src-${id}`, 'source-layer': id };
  if (kind === 'polygon') {
    map.addLayer({ id: `lyr-${id}-fill`, type: 'fill', ...base, filter: ['==', ['geometry-type'], 'Polygon'], paint: { 'fill-color': paintColor(id), 'fill-opacity': op * 0.6 } }, choroBelow());
    map.addLayer({ id: `lyr-${id}-line`, type: 'line', ...base, paint: { 'line-color': '#333', 'line-width': 0.8, 'line-opacity': op } }, choroBelow());
  } else if (kind === 'line') {
    map.addLayer({ id: `lyr-${id}-line`, type: 'line', ...base, paint: { 'line-color': paintColor(id), 'line-width': 2, 'line-opacity': op } }, choroBelow());
  } else {
    map.addLayer({ id: `lyr-${id}-circle`, type: 'circle', ...base, paint: { 'circle-color': paintColor(id), 'circle-radius': ['interpolate', ['linear'], ['zoom'], 8, 2, 14, 5], 'circle-stroke-color': '#fff', 'circle-stroke-width': 0.8, 'circle-opacity': op } }, choroBelow());
  }
  state.order.push(id);
  const chk = document.getElementById(`chk-${id}`);
  if (chk) chk.checked = true;
  restack();
  renderLegend();
  writeHash();
  map.fire('datahub-layers');
}

function hideLayer(id) {
  for (const s of styleIds(id)) if (map.getLayer(s)) map.removeLayer(s);
  state.order = state.order.filter((x) => x !== id);
  const chk = document.getElementById(`chk-${id}`);
  if (chk) chk.checked = false;
  renderLegend();
  writeHash();
  map.fire('datahub-layers');
}

function choroBelow() { return map.getLayer('choro-fill') ? 'choro-fill' : undefined; }

/** Later in `order` draws on top. */
function restack() {
  for (const id of state.order) for (const s of styleIds(id)) if (map.getLayer(s)) map.moveLayer(s, choroBelow());
  // What changed is drawn over everything, whatever was turned on after it.
  for (const s of CHANGE_IDS) if (map.getLayer(s)) map.moveLayer(s);
}

function move(id, delta) {
  const i = state.order.indexOf(id);
  if (i < 0) return;
  const j = Math.max(0, Math.min(state.order.length - 1, i + delta));
  state.order.splice(i, 1);
  state.order.splice(j, 0, id);
  restack();
  renderLegend();
  writeHash();
}

function setOpacity(id, v) {
  state.opacity[id] = v;
  if (map.getLayer(`lyr-${id}-fill`)) map.setPaintProperty(`lyr-${id}-fill`, 'fill-opacity', v * 0.6);
  if (map.getLayer(`lyr-${id}-line`)) map.setPaintProperty(`lyr-${id}-line`, 'line-opacity', v);
  if (map.getLayer(`lyr-${id}-circle`)) map.setPaintProperty(`lyr-${id}-circle`, 'circle-opacity', v);
}

/** Colour by a field: graduated (5 quantile classes) for numbers, categorical (up to 9
 * values, the rest grey) for text, from a sample of up to 2,000 features. */
async function colorBy(id, field) {
  if (!field) delete state.colorBy[id];
  else {
    const fc = await api(`/collections/${encodeURIComponent(id)}/items?limit=2000`);
    const vals = fc.features.map((f) => f.properties[field]).filter((v) => v !== null && v !== undefined);
    if (vals.length && vals.every((v) => typeof v === 'number')) {
      const s = [...vals].sort((a, b) => a - b);
      const br = [...new Set([1, 2, 3, 4].map((k) => s[Math.floor((k * s.length) / 5)]))];
      const expr = ['step', ['to-number', ['get', field], 0], RAMP[0]];
      br.forEach((b, i) => expr.push(b, RAMP[i + 1]));
      const classes = [RAMP[0], ...br.map((_, i) => RAMP[i + 1])].map((c, i) => ({ color: c, label: i === 0 ? `< ${fmtValue(br[0])}` : `≥ ${fmtValue(br[i - 1])}` }));
      state.colorBy[id] = { field, expr, classes };
    } else {
      const counts = {};
      for (const v of vals) counts[v] = (counts[v] || 0) + 1;
      const top = Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 9).map((e) => e[0]);
      const expr = ['match', ['to-string', ['get', field]]];
      top.forEach((v, i) => expr.push(v, PALETTE[i]));
      expr.push('#bbbbbb');
      state.colorBy[id] = { field, expr: top.length ? expr : colorOf(id), classes: [...top.map((v, i) => ({ color: PALETTE[i], label: v })), { color: '#bbbbbb', label: t('other') }] };
    }
  }
  const color = paintColor(id);
  if (map.getLayer(`lyr-${id}-fill`)) map.setPaintProperty(`lyr-${id}-fill`, 'fill-color', color);
  else if (map.getLayer(`lyr-${id}-line`)) map.setPaintProperty(`lyr-${id}-line`, 'line-color', color);
  if (map.getLayer(`lyr-${id}-circle`)) map.setPaintProperty(`lyr-${id}-circle`, 'circle-color', color);
  renderLegend();
}

function renderLegend() {
  const el = $('legend');
  el.innerHTML = state.order.length ? '' : `<p>${t('nolegend')}</p>`;
  for (const id of [...state.order].reverse()) {
    const l = state.byId[id];
    if (!l) continue;
    const cb = state.colorBy[id];
    let html = `<div class="legend-item" draggable="true" data-layer="${esc(id)}" title="${t('drag')}"><span class="swatch" style="background:${cb ? '#fff' : colorOf(id)}"></span><strong>${esc(l.title)}</strong>${cb ? ` — ${esc(cb.field)}` : ''}</div>`;
    if (cb) html += cb.classes.map((c) => `<div class="legend-item" style="margin-left:1.2rem"><span class="swatch" style="background:${c.color}"></span>${esc(String(c.label))}</div>`).join('');
    el.insertAdjacentHTML('beforeend', html);
  }
  // Drag a legend entry onto another to change the drawing order (the ↑ ↓ buttons of
  // each layer do the same from the keyboard).
  el.querySelectorAll('[draggable=true]').forEach((item) => {
    item.addEventListener('dragstart', (e) => e.dataTransfer.setData('text/plain', item.dataset.layer));
    item.addEventListener('dragover', (e) => e.preventDefault());
    item.addEventListener('drop', (e) => {
      e.preventDefault();
      const from = e.dataTransfer.getData('text/plain');
      const to = item.dataset.layer;
      if (!from || from === to) return;
      state.order = state.order.filter((x) => x !== from);
      state.order.splice(state.order.indexOf(to) + 1, 0, from);
      restack();
      renderLegend();
      writeHash();
    });
  });
}

// ---- popups ----
map.on('click', async (e) => {
  if ($('nearmode').checked) return nearest(e.lngLat);
  if (changePopup(e)) return;
  const styleLayers = state.order.flatMap(styleIds).filter((s) => map.getLayer(s));
  const hits = map.queryRenderedFeatures(e.point, { layers: [...styleLayers, ...(map.getLayer('choro-fill') ? ['choro-fill'] : [])] });
  if (!hits.length) return;
  const f = hits[0];
  if (f.layer.id === 'choro-fill') return profile(f.id, f.properties);
  const id = f.source.replace(/^src-/, '');
  const popup = new maplibregl.Popup({ maxWidth: '340px' }).setLngLat(e.lngLat).setHTML(`<p>${t('loading')}</p>`).addTo(map);
  try {
    const item = await api(`/collections/${encodeURIComponent(id)}/items/${f.id}`);
    const rows = Object.entries(item.properties).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(fmtValue(v))}</td></tr>`).join('');
    popup.setHTML(`<h3 style="margin:.2rem 0">${esc(state.byId[id]?.title || id)}</h3><table class="attrs" data-feature="${f.id}">${rows}</table>
      <p><a href="/collections/${encodeURIComponent(id)}/items/${f.id}?f=html" target="_blank" rel="noopener">${t('inapi')}</a></p>`);
  } catch (err) {
    popup.setHTML(`<p class="error">${esc(err.message)}</p>`);
  }
});
map.on('mousemove', (e) => {
  const styleLayers = [...state.order.flatMap(styleIds), ...CHANGE_IDS].filter((s) => map.getLayer(s));
  map.getCanvas().style.cursor = styleLayers.length && map.queryRenderedFeatures(e.point, { layers: styleLayers }).length ? 'pointer' : '';
});

// ---- layer details ----
async function showDetails(id) {
  const body = $('details-body');
  $('details').hidden = false;
  // The changes drawn are the details' layer's: another layer's details start without.
  if (state.changes && state.changes.layer !== id) clearChanges();
  state.detailsId = id;
  body.innerHTML = `<p>${t('loading')}</p>`;
  const [rec, hist, q] = await Promise.all([
    api(`/api/layers/${id}`),
    api(`/api/layers/${id}/versions`).catch(() => ({ versions: [] })),
    api(`/api/layers/${id}/quality`).catch(() => null),
  ]);
  const row = (k, v) => (v === null || v === undefined || v === '' ? '' : `<tr><th>${esc(k)}</th><td>${esc(Array.isArray(v) ? v.join(', ') : String(v))}</td></tr>`);
  const checks = q && q.diagnosis ? q.diagnosis.checks : [];
  const problems = checks.filter((c) => c.count > 0).sort((a, b) => b.penalty - a.penalty).slice(0, 8)
    .map((c) => `<li>${esc(lang() === 'es' ? c.message_es : c.message_en)}</li>`).join('');
  body.innerHTML = `<h2>${esc(rec.title)}</h2><p>${esc(rec.description || '')}</p>
    <table class="attrs">
      ${row(t('ministry'), rec.ministry.name || rec.ministry.slug)}${row(t('access'), lang() === 'es' ? rec.access_es : rec.access)}
      ${row(t('features'), rec.feature_count)}${row(t('geometry'), rec.geometry_types)}${row('CRS', rec.source_crs)}
      ${row(t('keywords'), rec.keywords)}${row(t('theme'), rec.theme)}${row(t('license'), rec.license)}
      ${row(t('contact'), [rec.contact.name, rec.contact.email].filter(Boolean).join(' '))}${row(t('frequency'), rec.update_frequency)}
      ${row(t('temporal'), rec.temporal)}${row(t('modified'), rec.modified)}${row(t('version'), rec.version)}
      ${row(t('mqa'), `${rec.metadata_quality.points}/405 (${lang() === 'es' ? rec.metadata_quality.band_es : rec.metadata_quality.band})`)}
    </table>
    <h3>${t('quality')}</h3>
    ${q ? `<p><span class="badge g-${esc(q.grade)}">${esc(lang() === 'es' ? q.grade_es : q.grade_en)}</span> ${q.score}/100</p><ul class="problems">${problems}</ul>` : ''}
    <p><a href="/api/layers/${id}/quality?f=html" target="_blank" rel="noopener">${t('fullreport')}</a></p>
    <h3>${t('downloads')}</h3><ul>${rec.downloads.map((d) => `<li><a href="${esc(d.href)}">${esc(d.title)}</a></li>`).join('')}</ul>
    <h3>${t('forqgis')}</h3>
    <p>OGC API – Features</p><code class="url">${esc(location.origin)}/collections/${esc(id)}</code>
    <p>TileJSON</p><code class="url">${esc(location.origin)}/tiles/${esc(id)}.json</code>
    <h3>${t('changessince')}</h3>
    <div class="row changes-control">
      <label for="changes-since" class="sr">${t('changessince')}</label>
      <input type="date" id="changes-since" value="${esc(dayBefore((hist.versions.find((v) => v.current) || {}).created_at))}" max="${esc(new Date().toISOString().slice(0, 10))}">
      <button type="button" id="changes-show">${t('show')}</button>
      <button type="button" id="changes-clear" class="secondary">${t('clear')}</button>
    </div>
    <div id="changes-legend" aria-live="polite"></div>
    <h3>${t('history')}</h3><ul>${hist.versions.map((v) => `<li>v${v.version}${v.current ? ' ★' : ''}${v.draft ? ` — <strong>${t('draftmark')}</strong>` : ''} — ${esc(v.created_at)} — ${esc(v.uploaded_by || '')} — ${esc(v.source_file)} (${v.feature_count})${v.note ? ` — ${esc(v.note)}` : ''}${v.approved_by ? ` — ${t('approvedby')} ${esc(v.approved_by)}` : ''}</li>`).join('')}</ul>`;
  $('changes-show').addEventListener('click', () => showChanges(id));
  $('changes-clear').addEventListener('click', clearChanges);
  if (state.changes) renderChangesLegend();
  $('details-close').focus();
}
$('details-close').addEventListener('click', () => {
  $('details').hidden = true;
  state.detailsId = null;
  clearChanges();
});

// ---- changes since a date ----
/** The day before `iso` in Monterrey (UTC−6, as the server reads a bare date): the
 * state then is the version before the one current, a useful first comparison. */
function dayBefore(iso) {
  const ms = Date.parse(iso || '');
  if (Number.isNaN(ms)) return '';
  return new Date(ms - 6 * 3600e3 - 86400e3).toISOString().slice(0, 10);
}

async function showChanges(id) {
  const el = $('changes-legend');
  const since = $('changes-since').value;
  if (!since) { el.innerHTML = `<p class="error">${t('pickdate')}</p>`; return; }
  el.innerHTML = `<p>${t('loading')}</p>`;
  const url = `/collections/${encodeURIComponent(id)}/changes?since=${encodeURIComponent(since)}`;
  let summary;
  let fc;
  try {
    // The summary has the exact counts and the bbox; the GeoJSON may be only its first page.
    [summary, fc] = await Promise.all([api(url), api(`${url}&f=geojson&limit=10000`)]);
    await mapLoaded;
  } catch (err) {
    // 410: that date's version is no longer kept; the server says what to do instead.
    if (state.detailsId === id) el.innerHTML = `<p class="error">${esc(err.message)}</p>`;
    return;
  }
  if (state.detailsId !== id) return;
  clearChanges();
  map.addSource('changes', { type: 'geojson', data: fc });
  for (const l of changeLayers('changes')) map.addLayer(l);
  state.changes = { layer: id, since, summary, returned: fc.numberReturned, matched: fc.numberMatched };
  window.datahub.changes = state.changes;
  renderChangesLegend();
  const b = summary.bbox;
  // A jump, not a flight: the tiles a flight asks for on its way are cancelled after it.
  if (b) map.fitBounds([[b[0], b[1]], [b[2], b[3]]], { padding: 40, maxZoom: 16, duration: 0 });
}

function renderChangesLegend() {
  const el = $('changes-legend');
  const c = state.changes;
  if (!el || !c) return;
  const s = c.summary;
  const from = s.from ? `v${s.from.version}` : t('chg_nothing');
  const capped = c.matched > c.returned ? `<p class="hint">${t('firstn')} ${esc(fmtValue(c.returned))} / ${esc(fmtValue(c.matched))}</p>` : '';
  el.innerHTML = `<p class="changes-range"><strong>${esc(from)} → v${esc(s.to.version)}</strong></p>
    <p class="changes-counts">${changeCounts(s.counts)}</p>${capped}`;
}

function clearChanges() {
  for (const s of CHANGE_IDS) if (map.getLayer(s)) map.removeLayer(s);
  if (map.getSource('changes')) map.removeSource('changes');
  state.changes = null;
  window.datahub.changes = null;
  const el = $('changes-legend');
  if (el) el.innerHTML = '';
}

/** A changed feature's popup: what happened to it and its attributes as they are (or,
 * removed, as they were). True when the click was on one. */
function changePopup(e) {
  const layers = CHANGE_IDS.filter((s) => map.getLayer(s));
  const f = layers.length && map.queryRenderedFeatures(e.point, { layers })[0];
  if (!f) return false;
  const p = f.properties;
  const kind = CHANGE_KINDS.includes(p.datahub_change) ? p.datahub_change : 'modified';
  const rows = Object.entries(p).filter(([k]) => !k.startsWith('datahub_'))
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(fmtValue(v))}</td></tr>`).join('');
  const what = p.datahub_changed ? `<p>${t('chg_what')}: ${esc(String(p.datahub_changed).split(',').join(', '))}</p>` : '';
  new maplibregl.Popup({ maxWidth: '340px' }).setLngLat(e.lngLat)
    .setHTML(`<h3 style="margin:.2rem 0">${t(`chg1_${kind}`)}</h3>${what}<table class="attrs" data-change="${esc(kind)}">${rows}</table>`)
    .addTo(map);
  return true;
}

// ---- neighbourhood view ----
function fillZoneSelects() {
  const polys = state.layers.filter((l) => geomKind(l) === 'polygon');
  const zs = $('zones');
  const keep = zs.value;
  zs.innerHTML = polys.map((l) => `<option value="${esc(l.id)}">${esc(l.title)}</option>`).join('');
  if (keep) zs.value = keep;
  const ls = $('zlayer');
  const keepL = ls.value;
  ls.innerHTML = state.layers.filter((l) => geomKind(l) !== 'table').map((l) => `<option value="${esc(l.id)}">${esc(l.title)}</option>`).join('');
  ls.value = keepL || (state.layers.find((l) => geomKind(l) === 'point') || state.layers[0] || {}).id || '';
  fillStats();
}
function fillStats() {
  const l = state.byId[$('zlayer').value];
  if (!l) return;
  const opts = [['count', t('count')], ['density', t('density')]];
  if (geomKind(l) === 'line') opts.push(['length', t('length')]);
  if (geomKind(l) === 'polygon') opts.push(['area_share', t('areashare')]);
  for (const f of l.fields || []) {
    if (['integer', 'long', 'int', 'float'].includes(f.type)) {
      opts.push([`sum:${f.name}`, `${t('sum')} ${f.name}`], [`mean:${f.name}`, `${t('mean')} ${f.name}`]);
    }
  }
  $('zstat').innerHTML = opts.map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join('');
}
$('zlayer').addEventListener('change', fillStats);

async function drawChoropleth() {
  const zones = $('zones').value;
  const layer = $('zlayer').value;
  const stat = $('zstat').value;
  const method = $('zmethod').value;
  const qs = `zones=${encodeURIComponent(zones)}&layer=${encodeURIComponent(layer)}&stat=${encodeURIComponent(stat)}`;
  let lg;
  try {
    lg = await api(`/api/analysis/legend?${qs}&method=${method}`);
  } catch (err) {
    $('zlegend').innerHTML = `<p class="error">${esc(err.message)}</p>`;
    return;
  }
  clearChoropleth();
  map.addSource('choro', { type: 'vector', tiles: [`${location.origin}/api/analysis/tiles/${encodeURIComponent(zones)}/${encodeURIComponent(layer)}/${encodeURIComponent(stat)}/{z}/{x}/{y}.mvt?method=${method}`] });
  const color = ['match', ['get', 'class']];
  lg.classes.forEach((c) => color.push(c.class, c.color));
  color.push(lg.no_data_color);
  map.addLayer({ id: 'choro-fill', type: 'fill', source: 'choro', 'source-layer': lg.vector_layer, paint: { 'fill-color': color, 'fill-opacity': 0.75, 'fill-outline-color': '#555' } });
  state.choro = { zones, layer, stat, method, legend: lg };
  $('zcsv').href = `/api/analysis/aggregate?${qs}&f=csv`;
  $('zcsv').hidden = false;
  const statLabel = $('zstat').selectedOptions[0]?.textContent || stat;
  $('zlegend').innerHTML = `<h3>${esc(statLabel)} — ${esc(state.byId[layer]?.title || layer)}</h3>${lg.classes.map((c) => `<div class="legend-item" data-class="${c.class}" data-min="${c.min}" data-max="${c.max}"><span class="swatch" style="background:${c.color}"></span>${fmtValue(c.min)} – ${fmtValue(c.max)} (${c.count})</div>`).join('')}
    ${lg.no_data ? `<div class="legend-item"><span class="swatch" style="background:${lg.no_data_color}"></span>${t('nodata')} (${lg.no_data})</div>` : ''}<p>${t('clickzone')}</p>`;
  window.datahub.choropleth = state.choro;
}
function clearChoropleth() {
  if (map.getLayer('choro-fill')) map.removeLayer('choro-fill');
  if (map.getSource('choro')) map.removeSource('choro');
  state.choro = null;
  $('zcsv').hidden = true;
  $('zlegend').innerHTML = '';
  $('zprofile').innerHTML = '';
}
$('zdraw').addEventListener('click', drawChoropleth);
$('zclear').addEventListener('click', clearChoropleth);

async function profile(fid, props) {
  const el = $('zprofile');
  el.innerHTML = `<p>${t('loading')}</p>`;
  const p = await api(`/api/analysis/profile?zones=${encodeURIComponent(state.choro.zones)}&zone=${fid}`).catch((e) => ({ error: e.message }));
  if (p.error) { el.innerHTML = `<p class="error">${esc(p.error)}</p>`; return; }
  const visible = new Set(state.order);
  const rows = p.ministries.flatMap((m) => m.layers.filter((l) => !visible.size || visible.has(l.layer)).map((l) => {
    const stats = Object.entries(l).filter(([k]) => !['layer', 'title', 'version', 'geometry'].includes(k)).map(([k, v]) => `${esc(k)}: ${esc(fmtValue(v))}`).join(', ');
    return `<tr><th>${esc(l.title || l.layer)}</th><td>${stats}</td></tr>`;
  })).join('');
  el.innerHTML = `<h3>${esc(p.zone.name || props.name || fid)} (${fmtValue(p.zone.area_km2)} km²)</h3><p>${t('value')}: ${esc(fmtValue(props.value))}</p><table class="attrs">${rows}</table>`;
}

async function nearest(lngLat) {
  const layer = $('zlayer').value;
  const r = await api(`/api/analysis/nearest?layer=${encodeURIComponent(layer)}&lon=${lngLat.lng}&lat=${lngLat.lat}&k=5`).catch((e) => ({ error: e.message }));
  if (r.error) { $('zprofile').innerHTML = `<p class="error">${esc(r.error)}</p>`; return; }
  if (map.getSource('near')) map.getSource('near').setData(r);
  else {
    map.addSource('near', { type: 'geojson', data: r });
    map.addLayer({ id: 'near', type: 'circle', source: 'near', paint: { 'circle-radius': 8, 'circle-color': '#ffbf47', 'circle-stroke-color': '#000', 'circle-stroke-width': 1.5 } });
  }
  $('zprofile').innerHTML = `<h3>${t('nearestof')} ${esc(state.byId[layer]?.title || layer)}</h3><ol>${r.features.map((f) => `<li>#${f.id} — ${fmtValue(f.properties.distance_m)} m</li>`).join('')}</ol>`;
}

// ---- boundary labels ----
// Text in a MapLibre symbol layer needs glyph files from a server; to stay offline the
// boundaries' names are HTML labels at each zone's centre, shown while the boundaries
// layer is on and the map is close enough (up to 3,000 zones).
const labels = [];
async function labelBoundaries(id) {
  const l = state.byId[id];
  if (!l || geomKind(l) !== 'polygon') return;
  const fc = await api(`/collections/${encodeURIComponent(id)}/items?limit=3000`).catch(() => null);
  if (!fc) return;
  const textField = (l.fields || []).find((f) => /^(nombre|name|nom_?col|colonia)$/i.test(f.name)) || (l.fields || []).find((f) => f.type === 'string');
  if (!textField) return;
  for (const f of fc.features) {
    const polys = f.geometry.type === 'Polygon' ? [f.geometry.coordinates] : f.geometry.coordinates;
    // The centre of the largest ring's vertices: inside for the compact shapes of zones.
    const ring = polys.map((p) => p[0]).sort((a, b) => b.length - a.length)[0];
    const c = ring.reduce((acc, [x, y]) => [acc[0] + x / ring.length, acc[1] + y / ring.length], [0, 0]);
    const el = document.createElement('div');
    el.className = 'zone-label';
    el.textContent = f.properties[textField.name] ?? '';
    labels.push({ layer: id, marker: new maplibregl.Marker({ element: el }).setLngLat(c) });
  }
  // Few zones can be named from the city-wide view; many only closer in.
  const minZoom = fc.features.length <= 100 ? 11 : 13;
  const update = () => {
    for (const x of labels) {
      const on = map.getZoom() >= minZoom && state.order.includes(x.layer);
      if (on && !x.shown) x.marker.addTo(map);
      if (!on && x.shown) x.marker.remove();
      x.shown = on;
    }
  };
  map.on('zoomend', update);
  map.on('datahub-layers', update);
  update();
}

// ---- tabs, sign-in, language ----
for (const [tab, panel] of [['tab-layers', 'panel-layers'], ['tab-zones', 'panel-zones']]) {
  $(tab).addEventListener('click', () => {
    for (const [t2, p2] of [['tab-layers', 'panel-layers'], ['tab-zones', 'panel-zones']]) {
      $(t2).setAttribute('aria-selected', String(t2 === tab));
      $(p2).hidden = p2 !== panel;
    }
  });
}
$('signin').addEventListener('click', async () => {
  if (state.session.signed_in) {
    await signOut();
    await refresh();
    return;
  }
  $('signin-error').textContent = '';
  $('signin-dialog').showModal();
});
$('signin-cancel').addEventListener('click', () => $('signin-dialog').close());
$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    await signIn($('token').value);
    $('token').value = '';
    $('signin-dialog').close();
    await refresh();
  } catch (err) {
    $('signin-error').textContent = err.message;
  }
});
$('lang').addEventListener('click', () => { setLang(lang() === 'es' ? 'en' : 'es'); applyI18n(); refresh(); });

async function refresh() {
  await loadSession();
  await loadCatalog();
  renderLegend();
}

// The catalogue is fetched while MapLibre sets up WebGL, not after.
applyI18n();
const firstLoad = refresh();

map.on('load', async () => {
  const wanted = readHash();
  await firstLoad;
  // The default basemap: the neighbourhood boundaries of the demo data when present.
  if (!wanted.length && state.byId[config.boundaries]) showLayer(config.boundaries);
  labelBoundaries(config.boundaries);
  for (const id of wanted) showLayer(id);
  window.datahub.ready = true;
  window.datahub.readyAt = performance.now();
});
