// GIS staff publish here: sign in with a ministry token (HttpOnly session cookie),
// choose a file (drag and drop), fill the record, upload with a progress bar, follow
// the ingest job, read the diagnosis (problems first), roll back to a kept version.
import { t, lang, setLang, applyI18n, esc, api, session, signIn } from '/web/app/common.js';

const $ = (id) => document.getElementById(id);
let layers = [];

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
  showVersions(id);
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

async function showVersions(id) {
  const el = $('versions');
  if (!id) { el.innerHTML = ''; return; }
  const h = await api(`/api/layers/${id}/versions`).catch(() => ({ versions: [] }));
  el.innerHTML = `<h3>${lang() === 'es' ? 'Versiones' : 'Versions'}</h3><ul>${h.versions.map((v) => `<li>v${v.version}${v.current ? ' ★' : ''} — ${esc(v.created_at)} — ${esc(v.source_file)} (${v.feature_count})
    ${v.current ? '' : `<button type="button" data-restore="${v.version}">${t('restore')}</button>`}</li>`).join('')}</ul>`;
  el.querySelectorAll('[data-restore]').forEach((b) => b.addEventListener('click', async () => {
    try {
      const r = await api(`/api/layers/${id}/versions/${b.dataset.restore}/restore`, { method: 'POST' });
      $('report').innerHTML = `<p>v${r.restored_version} → v${r.version}</p>`;
      showVersions(id);
    } catch (err) { $('report').innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  }));
}

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

// The diagnosis, problems first (costliest at the top); missing metadata is fixed in place.
async function showDiagnosis(layer) {
  const q = await api(`/api/layers/${layer}/quality`);
  const problems = q.diagnosis.checks.filter((c) => c.count > 0).sort((a, b) => b.penalty - a.penalty);
  const msg = (c) => (lang() === 'es' ? c.message_es : c.message_en);
  const item = (c) => `<li data-check="${esc(c.code)}">${esc(msg(c))}${FIXABLE[c.code] ? fixForm(c) : c.fix ? ` — <em>${esc(c.fix)}</em>` : ''}</li>`;
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
