// GIS staff publish here: sign in with a ministry token (HttpOnly session cookie),
// choose a file (drag and drop), fill the record, upload with a progress bar, follow
// the ingest job, read the diagnosis (problems first), review a draft (what it changes,
// on a small map) before publishing or discarding it, roll back to a kept version.
import {
  t, lang, setLang, applyI18n, esc, api, session, signIn, fmtValue, baseStyle, changeLayers, changeCounts, identityText,
} from '/web/app/common.js';

const $ = (id) => document.getElementById(id);
let layers = [];
// As on the map page: the draft preview's map, for scripts and the browser checks.
window.datahub = { draftMap: null };

async function start() {
  applyI18n();
  const s = await session();
  $('signin-form').hidden = s.signed_in;
  $('upload-form').hidden = !s.signed_in;
  if (!s.signed_in) { $('token').focus(); return; }
  $('who').textContent = `${s.label} — ${s.ministry || 'admin'} (${s.role})`;
  layers = (await api('/api/layers')).layers;
  $('target').innerHTML = `<option value="">${t('newlayer')}</option>${layers
    .filter((l) => !s.ministry || l.ministry.slug === s.ministry)
    .map((l) => `<option value="${esc(l.id)}">${t('newversion')} ${esc(l.title)} (${esc(l.id)})</option>`).join('')}`;
  // Zone layers a table can be joined to: the polygon layers the user may see.
  $('join_layer').innerHTML = `<option value="">—</option>${layers
    .filter((l) => (l.geometry_types || []).some((g) => g.includes('Polygon')))
    .map((l) => `<option value="${esc(l.id)}">${esc(l.title)} (${esc(l.id)})</option>`).join('')}`;
  const pre = new URLSearchParams(location.search).get('layer');
  if (pre) $('target').value = pre;
  target();
}

function target() {
  const id = $('target').value;
  $('newfields').hidden = !!id;
  $('access').parentElement.querySelector('label').classList.toggle('req', !id);
  $('draft-result').innerHTML = '';
  versionsAndDraft(id);
}
$('target').addEventListener('change', target);

// The zone layer's fields, to pick the one the table's key matches.
$('join_layer').addEventListener('change', async () => {
  const id = $('join_layer').value;
  $('join_field').innerHTML = '<option value="">—</option>';
  if (!id) return;
  const rec = await api(`/api/layers/${encodeURIComponent(id)}`);
  $('join_field').innerHTML = (rec.fields || []).map((f) => `<option value="${esc(f.name)}">${esc(f.name)}</option>`).join('');
});

/** The layer's versions; drafts are marked and cannot be restored (they are published
 * or discarded from the draft panel). */
async function showVersions(id) {
  const el = $('versions');
  if (!id) { el.innerHTML = ''; return []; }
  const h = await api(`/api/layers/${id}/versions`).catch(() => ({ versions: [] }));
  el.innerHTML = `<h3>${lang() === 'es' ? 'Versiones' : 'Versions'}</h3><ul>${h.versions.map((v) => `<li${v.draft ? ' class="draft" data-draft="true"' : ''}>v${v.version}${v.current ? ' ★' : ''}${v.draft ? ` — <strong>${t('draftmark')}</strong>` : ''} — ${esc(v.created_at)} — ${esc(v.source_file)} (${v.feature_count})${v.approved_by ? ` — ${t('approvedby')} ${esc(v.approved_by)}` : ''}
    ${v.current || v.draft ? '' : `<button type="button" data-restore="${v.version}">${t('restore')}</button>`}</li>`).join('')}</ul>`;
  el.querySelectorAll('[data-restore]').forEach((b) => b.addEventListener('click', async () => {
    try {
      const r = await api(`/api/layers/${id}/versions/${b.dataset.restore}/restore`, { method: 'POST' });
      $('report').innerHTML = `<p>v${r.restored_version} → v${r.version}</p>`;
      // A restore replaces the version a draft was made on: it may no longer be publishable.
      versionsAndDraft(id);
    } catch (err) { $('report').innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  }));
  return h.versions;
}

/** The versions, and the draft panel when they include a draft. The draft is asked for
 * only then: asking when there is none is a 404, which the browser logs as an error. */
async function versionsAndDraft(id) {
  const versions = await showVersions(id);
  if (id !== $('target').value) return;
  if (versions.some((v) => v.draft)) await showDraft(id);
  else hideDraft();
}

// ---- the draft panel ----
let draftMap = null;
let mapConfig = null;
// Bumped by every show and hide: a draft still loading when another is asked for (or
// the panel closed) is dropped rather than drawn into the same container.
let draftSeq = 0;

function removeDraftMap() {
  if (draftMap) { draftMap.remove(); draftMap = null; }
  window.datahub.draftMap = null;
}
function hideDraft() {
  draftSeq += 1;
  removeDraftMap();
  $('draft-panel').hidden = true;
  delete $('draft-panel').dataset.layer;
}

/** What the draft changes against the version it was made on: counts, how features
 * were paired, columns added, removed, retyped or renamed, the attributes that changed. */
function changesHtml(c) {
  if (!c) return `<p>${t('nocompare')}</p>`;
  if (c.error) return `<p class="error">${esc(c.error)}</p>`;
  const n = c.counts;
  const detail = n.modified ? ` (${esc(fmtValue(n.geometry_changed))} ${t('chg_geometry')}, ${esc(fmtValue(n.attributes_changed))} ${t('chg_attributes')})` : '';
  // A new layer's columns are all "added": listing them says nothing.
  const s = c.from && c.schema ? c.schema : { added: [], removed: [], retyped: [], renamed: [] };
  const cols = [
    ['col_added', s.added.map((f) => `${f.name} (${f.type})`)],
    ['col_removed', s.removed.map((f) => f.name)],
    ['col_retyped', s.retyped.map((r) => `${r.name}: ${r.from} → ${r.to}`)],
    ['col_renamed', s.renamed.map((r) => `${r.from} → ${r.to}`)],
    ['attrchanged', (c.attributes || []).map((a) => `${a.name} (${fmtValue(a.changed)})`)],
  ].filter(([, xs]) => xs.length).map(([k, xs]) => `<li data-what="${k}">${t(k)}: ${xs.map(esc).join(', ')}</li>`).join('');
  return `<p id="draft-counts">${changeCounts(n, ', ')}${detail}; ${esc(fmtValue(n.unchanged))} ${t('chg_unchanged')}</p>
    <p class="hint" title="${esc(c.identity && c.identity.note)}">${esc(identityText(c.identity))}</p>${cols ? `<ul>${cols}</ul>` : ''}`;
}

async function showDraft(id) {
  const seq = ++draftSeq;
  let d;
  try {
    d = await api(`/api/layers/${encodeURIComponent(id)}/draft`);
  } catch {
    // None, or not one the user may see: nothing to review.
    if (seq === draftSeq) hideDraft();
    return;
  }
  if (seq !== draftSeq) return;
  removeDraftMap();
  const panel = $('draft-panel');
  panel.dataset.layer = id;
  const row = (k, v) => (v === null || v === undefined || v === '' ? '' : `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`);
  const q = d.quality;
  const did = `${encodeURIComponent(id)}@draft`;
  $('draft-info').innerHTML = `<table class="attrs">
      ${row(t('layer'), id)}${row(t('version'), `v${d.version}`)}${row(t('madeon'), d.base ? `v${d.base}` : t('firstversion'))}
      ${row(t('uploadedby'), d.uploaded_by)}${row(t('created'), d.created_at)}${row(t('note'), d.note)}
      ${row(t('file'), d.source_file)}${row(t('features'), fmtValue(d.feature_count))}
    </table>
    ${q ? `<p id="draft-grade"><span class="badge g-${esc(q.grade)}">${esc(lang() === 'es' ? q.grade_es : String(q.grade).replace('_', ' '))}</span> ${esc(q.score)}/100
      — <a href="/api/layers/${did}/quality?f=html" target="_blank" rel="noopener">${t('fullreport')}</a></p>` : ''}`;
  $('draft-changes').innerHTML = changesHtml(d.changes);
  $('draft-approval').hidden = !d.approval_required;
  $('draft-why').textContent = d.may_publish ? '' : d.why_not || '';
  $('draft-publish').disabled = !d.may_publish;
  $('draft-discard').disabled = false;
  panel.hidden = false;
  await showDraftMap(id, d, seq);
}

/** The draft drawn in grey from its tiles, and over it what it changes, coloured. */
async function showDraftMap(id, d, seq) {
  const el = $('draft-map');
  delete el.dataset.ready;
  if (!mapConfig) {
    const config = await fetch('/api/map-config').then((r) => r.json()).catch(() => ({}));
    // This page's Content-Security-Policy admits only its own origin: a basemap from
    // elsewhere would be refused, so the preview keeps the plain background then.
    const local = (u) => { try { return new URL(u, location.href).origin === location.origin; } catch { return false; } };
    mapConfig = {
      basemap_style: config.basemap_style && local(config.basemap_style) ? config.basemap_style : null,
      basemap_tiles: config.basemap_tiles && local(config.basemap_tiles) ? config.basemap_tiles : null,
      basemap_attribution: config.basemap_attribution,
    };
  }
  // Its changes (when it could be compared: otherwise the panel already says why), and
  // where to look, fetched before the map is made: a map that starts elsewhere and then
  // moves cancels the tiles it asked for first.
  const c = d.changes && !d.changes.error ? d.changes : null;
  const did = `${encodeURIComponent(id)}@draft`;
  const [fc, tj] = await Promise.all([
    c ? api(`/collections/${did}/changes?f=geojson&limit=10000`).catch(() => null) : null,
    c && c.bbox ? null : api(`/tiles/${did}.json`).catch(() => null),
  ]);
  if (seq !== draftSeq) return;
  const b = (c && c.bbox) || (tj && tj.bounds);
  const view = b ? { bounds: [[b[0], b[1]], [b[2], b[3]]], fitBoundsOptions: { padding: 20, maxZoom: 16 } } : { center: [-100.31, 25.67], zoom: 10 };
  const m = new maplibregl.Map({ container: el, style: baseStyle(mapConfig), ...view, attributionControl: { compact: true } });
  draftMap = m;
  window.datahub.draftMap = m;
  m.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
  m.on('load', () => {
    const base = { source: 'draft', 'source-layer': id };
    const points = ['match', ['geometry-type'], ['Point', 'MultiPoint'], true, false];
    m.addSource('draft', { type: 'vector', tiles: [`${location.origin}/tiles/${did}/{z}/{x}/{y}.mvt`], minzoom: 0, maxzoom: 16 });
    m.addLayer({ id: 'draft-fill', type: 'fill', ...base, filter: ['match', ['geometry-type'], ['Polygon', 'MultiPolygon'], true, false], paint: { 'fill-color': '#9aa5b1', 'fill-opacity': 0.35 } });
    m.addLayer({ id: 'draft-line', type: 'line', ...base, filter: ['!', points], paint: { 'line-color': '#6b7785', 'line-width': 0.8 } });
    m.addLayer({ id: 'draft-circle', type: 'circle', ...base, filter: points, paint: { 'circle-color': '#9aa5b1', 'circle-radius': 3 } });
    if (fc) {
      m.addSource('changes', { type: 'geojson', data: fc });
      for (const l of changeLayers('changes')) m.addLayer(l);
    }
    m.once('idle', () => { if (m === draftMap) el.dataset.ready = 'true'; });
  });
}

async function draftAction(publish) {
  const id = $('draft-panel').dataset.layer;
  if (!id) return;
  if (!publish && !confirm(t('confirmdiscard'))) return;
  $('draft-publish').disabled = true;
  $('draft-discard').disabled = true;
  const out = $('draft-result');
  try {
    const r = await api(`/api/layers/${encodeURIComponent(id)}/draft${publish ? '/publish' : ''}`, { method: publish ? 'POST' : 'DELETE' });
    hideDraft();
    out.innerHTML = publish
      ? `<p id="draft-done"><strong>${t('done')}: ${esc(r.layer)} v${esc(r.version)}</strong>${r.approved_by ? ` — ${t('approvedby')} ${esc(r.approved_by)}` : ''}
        — <a href="/#13/25.67/-100.31/${encodeURIComponent(r.layer)}">${t('viewmap')}</a></p>${joinReport(r)}`
      : `<p id="draft-done"><strong>${t('discarded')}: ${esc(r.layer)} v${esc(r.version)}</strong></p>`;
  } catch (err) {
    // 403: the ministry's approval rules; 409: a newer version replaced its base.
    out.innerHTML = `<p class="error" id="draft-error">${esc(err.message)}</p>`;
    $('draft-discard').disabled = false;
  }
  // A new layer's draft is not the target (and, discarded, has no versions to list).
  if ($('target').value === id) await versionsAndDraft(id);
}
$('draft-publish').addEventListener('click', () => draftAction(true));
$('draft-discard').addEventListener('click', () => draftAction(false));

const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files.length) { $('file').files = e.dataTransfer.files; fileChosen(); }
});
$('file').addEventListener('change', fileChosen);
function fileChosen() {
  const f = $('file').files[0];
  $('file-name').textContent = f ? `${f.name} — ${(f.size / 1048576).toFixed(2)} MB` : '';
  if (f && !$('target').value && !$('id').value) {
    $('id').value = f.name.toLowerCase().replace(/\.(zip|gpkg|geojson|json|kml|kmz|csv|tsv|xlsx|xls|ods|fgb|shp)$/g, '').normalize('NFD').replace(/[\u0300-\u036f]/g, '').replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
  }
}

function metadata() {
  const id = $('target').value;
  const m = {};
  if (!id) { m.id = $('id').value.trim(); m.title = $('title').value.trim(); }
  for (const k of ['description', 'access', 'crs', 'theme', 'contact_name', 'contact_email', 'update_frequency', 'note']) {
    const v = $(k).value.trim();
    if (v) m[k] = v;
  }
  const kw = $('keywords').value.trim();
  if (kw) m.keywords = kw.split(',').map((x) => x.trim()).filter(Boolean);
  // Tables: coordinate columns, header row, or a key join to a zone layer.
  for (const k of ['lon', 'lat', 'coords']) {
    const v = $(k).value.trim();
    if (v) m[k] = v;
  }
  if ($('header_row').value) m.header_row = Number($('header_row').value);
  if ($('no_geometry').checked) m.no_geometry = true;
  if ($('draft').checked) m.draft = true;
  if ($('join_layer').value) {
    m.join = { layer: $('join_layer').value, field: $('join_field').value };
    if ($('key').value.trim()) m.key = $('key').value.trim();
    if ($('as_points').checked) m.as = 'points';
  }
  return m;
}

$('upload-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('target').value;
  const m = metadata();
  const missing = [];
  if (!$('file').files.length) missing.push(t('file'));
  if (!id && !m.id) missing.push('id');
  if (!id && !m.title) missing.push('título / title');
  if (!id && !m.access) missing.push('acceso / access');
  if (missing.length) { $('form-error').textContent = `${t('required')}: ${missing.join(', ')}`; return; }
  $('form-error').textContent = '';
  const fd = new FormData();
  fd.append('metadata', JSON.stringify(m));
  fd.append('file', $('file').files[0]);
  const xhr = new XMLHttpRequest();
  xhr.open(id ? 'PUT' : 'POST', id ? `/api/layers/${encodeURIComponent(id)}/data` : '/api/layers');
  xhr.withCredentials = true;
  $('progress').hidden = false;
  $('bar-upload').value = 0;
  $('bar-job').removeAttribute('value');
  $('report').innerHTML = '';
  $('draft-result').innerHTML = '';
  hideDraft();
  $('send').disabled = true;
  xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) $('bar-upload').value = (100 * ev.loaded) / ev.total; };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status !== 202) {
      $('send').disabled = false;
      $('form-error').textContent = (body && body.description) || `HTTP ${xhr.status}`;
      return;
    }
    $('bar-upload').value = 100;
    follow(xhr.getResponseHeader('Location'), body.layer);
  };
  xhr.onerror = () => { $('send').disabled = false; $('form-error').textContent = 'network error'; };
  xhr.send(fd);
});

// Record fields a metadata check asks for, edited here instead of with the CLI.
const FIXABLE = {
  'metadata.title': [['title', 'text']],
  'metadata.description': [['description', 'text']],
  'metadata.license': [['license', 'text']],
  'metadata.contact': [['contact_name', 'text'], ['contact_email', 'email']],
  'metadata.update_frequency': [['update_frequency', 'frequency']],
};

function fixForm(c) {
  const inputs = FIXABLE[c.code].map(([k, type]) => (type === 'frequency'
    ? `<select id="fix-${k}" name="${k}" aria-label="${esc(k)}">${[...$('update_frequency').options].filter((o) => o.value).map((o) => `<option value="${esc(o.value)}">${esc(o.textContent)}</option>`).join('')}</select>`
    : `<input id="fix-${k}" name="${k}" type="${type}" required aria-label="${esc(k)}">`)).join(' ');
  return `<form class="fix" data-code="${esc(c.code)}">${inputs} <button type="submit">${t('save')}</button><span class="error" role="alert"></span></form>`;
}

// The diagnosis, problems first (costliest at the top); missing metadata is fixed in
// place, except for a draft: the record a fix edits is the one served.
async function showDiagnosis(layer, draft = false) {
  const q = await api(`/api/layers/${layer}${draft ? '@draft' : ''}/quality`);
  const problems = q.diagnosis.checks.filter((c) => c.count > 0).sort((a, b) => b.penalty - a.penalty);
  const msg = (c) => (lang() === 'es' ? c.message_es : c.message_en);
  const item = (c) => `<li data-check="${esc(c.code)}">${esc(msg(c))}${FIXABLE[c.code] && !draft ? fixForm(c) : c.fix ? ` — <em>${esc(c.fix)}</em>` : ''}</li>`;
  $('diagnosis').innerHTML = `<p id="grade"><strong>${esc(lang() === 'es' ? q.grade_es : q.grade_en)}</strong> ${q.score}/100</p>
    <h4>${t('problemsfirst')}</h4>${problems.length ? `<ul class="problems">${problems.map(item).join('')}</ul>` : `<p>${t('noproblems')}</p>`}`;
  for (const form of $('diagnosis').querySelectorAll('form.fix')) {
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = {};
      for (const el of form.elements) if (el.name && el.value.trim()) body[el.name] = el.value.trim();
      try {
        await api(`/api/layers/${encodeURIComponent(layer)}`, { method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
        await showDiagnosis(layer);
      } catch (err) { form.querySelector('.error').textContent = err.message; }
    });
  }
}

// What a table upload's reading found: the key join (rows matched, rows with no zone
// and the closest zone names, zones with no row), layers joined again, reading notes.
function joinReport(r) {
  let html = '';
  const j = r.join;
  if (j) {
    const rows = j.unmatched_rows.map((u) => `<li>${esc(u.row)}: «${esc(u.key)}»${u.closest.length ? ` — ${t('closest')}: ${u.closest.map(esc).join(', ')}` : ''}</li>`).join('');
    html += `<h4>${t('joinof')} ${esc(j.zone_layer)} v${j.zone_version} (${esc(j.key.join('+'))})</h4>
      <p id="join-summary">${j.matched} / ${j.rows} ${t('rowsmatched')}; ${j.zones_without_row} / ${j.zones} ${t('zonesempty')}</p>
      ${rows ? `<p>${t('notmatched')}:</p><ul class="problems" id="join-unmatched">${rows}</ul>` : ''}`;
  }
  if (r.rejoined && r.rejoined.length) {
    html += `<h4>${t('rejoined')}</h4><ul>${r.rejoined.map((x) => `<li>${esc(x.layer)} ${x.version ? `v${x.version}` : esc(x.error)}</li>`).join('')}</ul>`;
  }
  if (r.notes && r.notes.length) {
    html += `<details><summary>${t('notes')}</summary><ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul></details>`;
  }
  return html;
}

async function follow(location, layer) {
  const job = await api(location);
  $('job-state').textContent = t(`state_${job.state}`);
  if (job.progress.percent !== null) $('bar-job').value = job.progress.percent;
  if (job.state === 'queued' || job.state === 'running') { setTimeout(() => follow(location, layer), 400); return; }
  $('send').disabled = false;
  if (job.state === 'failed') {
    $('report').innerHTML = `<h3 class="error">${t('failed')}</h3><p class="error" id="job-error">${esc(job.error)}</p>`;
    return;
  }
  $('bar-job').value = 100;
  const r = job.result;
  if (r.draft) {
    // Stored, not served: reviewed in the draft panel, then published or discarded.
    $('report').innerHTML = `<h3 id="draft-saved">${t('draftsaved')}: ${esc(layer)} v${esc(r.version)}${r.draft.base ? ` (${t('madeon').toLowerCase()} v${esc(r.draft.base)})` : ''}</h3>
      <p>${t('draftmsg')}</p><p class="hint" id="draft-message">${esc(r.draft.message)}</p>
      <p>${r.features_stored} / ${r.features_read} — ${esc(r.source_crs)}</p>
      <div id="diagnosis"></div>
      ${joinReport(r)}`;
    await showDiagnosis(layer, true);
    await showVersions($('target').value);
    await showDraft(layer);
    return;
  }
  $('report').innerHTML = `<h3>${t('done')}: ${esc(layer)} v${job.result.version}</h3>
    <p>${job.result.features_stored} / ${job.result.features_read} — ${esc(job.result.source_crs)}</p>
    <div id="diagnosis"></div>
    ${joinReport(job.result)}
    <p><a id="view-map" href="/#13/25.67/-100.31/${encodeURIComponent(layer)}">${t('viewmap')}</a></p>`;
  await showDiagnosis(layer);
  if (job.result.bbox) {
    const b = job.result.bbox;
    const z = 12;
    $('view-map').href = `/#${z}/${((b[1] + b[3]) / 2).toFixed(5)}/${((b[0] + b[2]) / 2).toFixed(5)}/${encodeURIComponent(layer)}`;
  }
  showVersions($('target').value);
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    await signIn($('token').value);
    $('token').value = '';
    start();
  } catch (err) { $('signin-error').textContent = err.message; }
});
$('lang').addEventListener('click', () => { setLang(lang() === 'es' ? 'en' : 'es'); applyI18n(); });
start();
