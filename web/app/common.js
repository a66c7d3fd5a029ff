// Shared by the map and the publishing page: Spanish-first texts with an English switch
// (kept in localStorage: a preference, not a credential), value formatting and escaping,
// and the API call helper.
const TEXTS = {
  es: {
    publish: 'Publicar', api: 'API', signin: 'Entrar', signout: 'Salir', layers: 'Capas', neighbourhoods: 'Colonias',
    search: 'Buscar capas', searchph: 'Buscar capas…', legend: 'Leyenda', zonelayer: 'Capa de zonas', layer: 'Capa',
    stat: 'Estadística', method: 'Clases', draw: 'Dibujar', clear: 'Quitar', csv: 'Tabla CSV',
    nearest: 'Más cercanos al hacer clic', tokenlabel: 'Token de tu secretaría', cancel: 'Cancelar',
    polygon: 'polígonos', line: 'líneas', point: 'puntos', table: 'tabla sin geometría', rows: 'filas', features: 'elementos', quality: 'Calidad',
    opacity: 'Opacidad', up: 'Subir', down: 'Bajar', zoom: 'Acercar', details: 'Detalles', colorby: 'Color por',
    nolayers: 'No hay capas que coincidan.', nolegend: 'Activa una capa para verla aquí.', other: 'otros',
    loading: 'Cargando…', inapi: 'Ver en la API OGC', ministry: 'Secretaría', access: 'Acceso', geometry: 'Geometría',
    keywords: 'Palabras clave', theme: 'Tema', license: 'Licencia', contact: 'Contacto', frequency: 'Actualización',
    temporal: 'Periodo', modified: 'Modificada', version: 'Versión', mqa: 'Calidad de metadatos',
    fullreport: 'Informe de calidad completo', downloads: 'Descargas', forqgis: 'Para QGIS y otros clientes',
    history: 'Historial de versiones', count: 'Número', density: 'Densidad (por km²)', length: 'Longitud (m)',
    areashare: 'Proporción de área', sum: 'Suma de', mean: 'Promedio de', nodata: 'Sin datos',
    clickzone: 'Haz clic en una zona para ver su perfil.', value: 'Valor', nearestof: 'Más cercanos de',
    file: 'Archivo', required: 'obligatorio', send: 'Publicar', newlayer: 'Capa nueva', newversion: 'Nueva versión de',
    uploading: 'Subiendo', processing: 'Procesando', done: 'Publicada', failed: 'Falló', viewmap: 'Ver en el mapa',
    restore: 'Restaurar', dropfile: 'Arrastra aquí el archivo o elígelo', mustsignin: 'Entra con el token de tu secretaría para publicar.',
    problemsfirst: 'Problemas encontrados', noproblems: 'Sin problemas.', drag: 'Arrastra para cambiar el orden',
    state_queued: 'en cola', state_running: 'en proceso', state_succeeded: 'terminado', state_failed: 'con error',
    joinof: 'Unión con', rowsmatched: 'filas unidas', notmatched: 'Sin zona', closest: 'más parecidas',
    zonesempty: 'zonas sin fila', rejoined: 'Capas unidas de nuevo', notes: 'Notas de la lectura', save: 'Guardar',
    savedraft: 'Guardar como borrador: revisar antes de publicar', draft: 'Borrador', draftmark: 'borrador',
    draftsaved: 'Borrador guardado', draftmsg: 'Solo tu secretaría lo ve hasta que se publique.', madeon: 'Hecho sobre',
    firstversion: 'ninguna (capa nueva)', uploadedby: 'Subido por', created: 'Fecha', note: 'Nota',
    publishdraft: 'Publicar borrador', discard: 'Descartar', discarded: 'Borrador descartado', approvedby: 'aprobada por',
    confirmdiscard: '¿Descartar el borrador? No se puede deshacer.', nocompare: 'No hay con qué compararlo.',
    approvalreq: 'Tu secretaría exige aprobación: lo publica un administrador distinto de quien lo subió.',
    chg_added: 'añadidos', chg_removed: 'quitados', chg_modified: 'modificados', chg_unchanged: 'sin cambios',
    chg1_added: 'Añadido', chg1_removed: 'Quitado', chg1_modified: 'Modificado', chg_what: 'Qué cambió',
    chg_geometry: 'geometría', chg_attributes: 'atributos', chg_nothing: 'nada', changessince: 'Cambios desde',
    show: 'Mostrar', pickdate: 'Elige una fecha.', firstn: 'En el mapa, los primeros',
    col_added: 'Columnas nuevas', col_removed: 'Columnas quitadas', col_retyped: 'Columnas con otro tipo',
    col_renamed: 'Columnas renombradas', attrchanged: 'Atributos cambiados',
    idn_id_field: 'Elementos emparejados por su id (campo {f}).', idn_key: 'Elementos emparejados por la clave {f}.',
    idn_content: 'Sin id ni clave: los elementos se emparejan por geometría y atributos, así que uno editado aparece como quitado y añadido.',
  },
  en: {
    publish: 'Publish', api: 'API', signin: 'Sign in', signout: 'Sign out', layers: 'Layers', neighbourhoods: 'Neighbourhoods',
    search: 'Search layers', searchph: 'Search layers…', legend: 'Legend', zonelayer: 'Zone layer', layer: 'Layer',
    stat: 'Statistic', method: 'Classes', draw: 'Draw', clear: 'Clear', csv: 'CSV table',
    nearest: 'Nearest on click', tokenlabel: "Your ministry's token", cancel: 'Cancel',
    polygon: 'polygons', line: 'lines', point: 'points', table: 'table without geometry', rows: 'rows', features: 'features', quality: 'Quality',
    opacity: 'Opacity', up: 'Up', down: 'Down', zoom: 'Zoom to', details: 'Details', colorby: 'Colour by',
    nolayers: 'No matching layers.', nolegend: 'Turn a layer on to see it here.', other: 'other',
    loading: 'Loading…', inapi: 'Open in the OGC API', ministry: 'Ministry', access: 'Access', geometry: 'Geometry',
    keywords: 'Keywords', theme: 'Theme', license: 'Licence', contact: 'Contact', frequency: 'Updated',
    temporal: 'Period', modified: 'Modified', version: 'Version', mqa: 'Metadata quality',
    fullreport: 'Full quality report', downloads: 'Downloads', forqgis: 'For QGIS and other clients',
    history: 'Version history', count: 'Count', density: 'Density (per km²)', length: 'Length (m)',
    areashare: 'Area share', sum: 'Sum of', mean: 'Mean of', nodata: 'No data',
    clickzone: 'Click a zone to see its profile.', value: 'Value', nearestof: 'Nearest of',
    file: 'File', required: 'required', send: 'Publish', newlayer: 'New layer', newversion: 'New version of',
    uploading: 'Uploading', processing: 'Processing', done: 'Published', failed: 'Failed', viewmap: 'See on the map',
    restore: 'Restore', dropfile: 'Drop the file here or choose it', mustsignin: "Sign in with your ministry's token to publish.",
    problemsfirst: 'Problems found', noproblems: 'No problems.', drag: 'Drag to change the order',
    state_queued: 'queued', state_running: 'running', state_succeeded: 'finished', state_failed: 'failed',
    joinof: 'Join to', rowsmatched: 'rows matched', notmatched: 'No zone', closest: 'closest',
    zonesempty: 'zones without a row', rejoined: 'Layers joined again', notes: 'Reading notes', save: 'Save',
    savedraft: 'Save as a draft: review before publishing', draft: 'Draft', draftmark: 'draft',
    draftsaved: 'Draft saved', draftmsg: 'Only your ministry sees it until it is published.', madeon: 'Made on',
    firstversion: 'none (new layer)', uploadedby: 'Uploaded by', created: 'Date', note: 'Note',
    publishdraft: 'Publish draft', discard: 'Discard', discarded: 'Draft discarded', approvedby: 'approved by',
    confirmdiscard: 'Discard the draft? This cannot be undone.', nocompare: 'There is nothing to compare it with.',
    approvalreq: 'Your ministry requires approval: an admin other than the uploader publishes it.',
    chg_added: 'added', chg_removed: 'removed', chg_modified: 'modified', chg_unchanged: 'unchanged',
    chg1_added: 'Added', chg1_removed: 'Removed', chg1_modified: 'Modified', chg_what: 'What changed',
    chg_geometry: 'geometry', chg_attributes: 'attributes', chg_nothing: 'nothing', changessince: 'Changes since',
    show: 'Show', pickdate: 'Choose a date.', firstn: 'On the map, the first',
    col_added: 'Columns added', col_removed: 'Columns removed', col_retyped: 'Columns retyped',
    col_renamed: 'Columns renamed', attrchanged: 'Changed attributes',
    idn_id_field: 'Features matched by their id (the {f} field).', idn_key: 'Features matched by the key {f}.',
    idn_content: 'No id or key: features are matched by geometry and attributes, so an edited one shows as removed and added.',
  },
};

/** JSON from DataHub's API (with the session cookie); a 4xx/5xx throws its description. */
export async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: 'same-origin', ...opts });
  const body = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.description) || `${r.status}`);
  return body;
}

const signedOut = { signed_in: false };

/** Who is signed in. A revoked or expired token left in the cookie is cleared (signed
 * out) rather than failing every later request. */
export async function session() {
  const r = await fetch('/api/session', { credentials: 'same-origin' }).catch(() => null);
  if (r && r.status === 401) await signOut();
  return r && r.ok ? r.json() : signedOut;
}
/** Exchanges a ministry token for the HttpOnly session cookie. */
export function signIn(token) {
  return api('/api/session', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
}
export function signOut() {
  return fetch('/api/session', { method: 'DELETE', credentials: 'same-origin' });
}

export function lang() {
  return localStorage.getItem('datahub-lang') === 'en' ? 'en' : 'es';
}
export function setLang(l) {
  localStorage.setItem('datahub-lang', l);
}
export function t(key) {
  return TEXTS[lang()][key] ?? TEXTS.es[key] ?? key;
}
export function applyI18n() {
  document.documentElement.lang = lang();
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  const b = document.getElementById('lang');
  if (b) b.textContent = lang() === 'es' ? 'EN' : 'ES';
}
export function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
/** Numbers with the locale's separators, ISO dates as local dates, booleans in words. */
export function fmtValue(v) {
  const loc = lang() === 'es' ? 'es-MX' : 'en-US';
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return v.toLocaleString(loc, { maximumFractionDigits: 3 });
  if (typeof v === 'boolean') return lang() === 'es' ? (v ? 'sí' : 'no') : (v ? 'yes' : 'no');
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(v)) {
    const d = new Date(`${v}T12:00:00`);
    if (!Number.isNaN(d.getTime())) return d.toLocaleDateString(loc, { year: 'numeric', month: 'short', day: 'numeric' });
  }
  return String(v);
}

// The basemap: a configured style or raster tiles (`[map]` in the settings), else a
// plain background, which works offline.
export function baseStyle(config) {
  return config.basemap_style || {
    version: 8,
    sources: config.basemap_tiles ? { basemap: { type: 'raster', tiles: [config.basemap_tiles], tileSize: 256, attribution: config.basemap_attribution || '' } } : {},
    layers: [
      { id: 'background', type: 'background', paint: { 'background-color': '#eef0ea' } },
      ...(config.basemap_tiles ? [{ id: 'basemap', type: 'raster', source: 'basemap' }] : []),
    ],
  };
}

// ---- what changed between two versions (the map's "changes since" and /publicar's draft) ----
export const CHANGE_KINDS = ['added', 'removed', 'modified'];
export const CHANGE_COLORS = { added: '#1a9850', removed: '#d73027', modified: '#fc8d59' };

/** The MapLibre layers of a changes GeoJSON source (`datahub_change` on each feature).
 * Removed features are drawn hollow and dashed: they are where something no longer is. */
export function changeLayers(source) {
  const kind = ['get', 'datahub_change'];
  const color = ['match', kind, 'added', CHANGE_COLORS.added, 'removed', CHANGE_COLORS.removed, CHANGE_COLORS.modified];
  const removed = ['==', kind, 'removed'];
  const poly = ['match', ['geometry-type'], ['Polygon', 'MultiPolygon'], true, false];
  const lines = ['match', ['geometry-type'], ['Polygon', 'MultiPolygon', 'LineString', 'MultiLineString'], true, false];
  const points = ['match', ['geometry-type'], ['Point', 'MultiPoint'], true, false];
  return [
    { id: `${source}-fill`, type: 'fill', source, filter: ['all', poly, ['!', removed]], paint: { 'fill-color': color, 'fill-opacity': 0.45 } },
    { id: `${source}-line`, type: 'line', source, filter: ['all', lines, ['!', removed]], paint: { 'line-color': color, 'line-width': 2 } },
    { id: `${source}-removed`, type: 'line', source, filter: ['all', lines, removed], paint: { 'line-color': CHANGE_COLORS.removed, 'line-width': 2, 'line-dasharray': [2, 1.5] } },
    { id: `${source}-circle`, type: 'circle', source, filter: points, paint: { 'circle-color': ['case', removed, '#ffffff', color], 'circle-radius': 5, 'circle-stroke-color': color, 'circle-stroke-width': 2 } },
  ];
}

/** "12 añadidos · 3 quitados · 5 modificados", each with its colour as in changeLayers. */
export function changeCounts(counts, sep = ' · ') {
  return CHANGE_KINDS.map((k) => {
    const sw = k === 'removed' ? `background:#fff;border:2px dashed ${CHANGE_COLORS[k]}` : `background:${CHANGE_COLORS[k]}`;
    return `<span class="chg" data-kind="${k}" data-count="${Number(counts[k]) || 0}"><span class="swatch" style="${sw}"></span>${esc(fmtValue(Number(counts[k]) || 0))} ${t(`chg_${k}`)}</span>`;
  }).join(sep);
}

/** How the two versions' features were paired, in the page's language (the server's
 * note is English). */
export function identityText(identity) {
  if (!identity) return '';
  const text = t(`idn_${identity.kind}`);
  if (text === `idn_${identity.kind}`) return identity.note || '';
  return text.replace('{f}', (identity.fields || []).map((f) => `«${f}»`).join(' + '));
}
