// Decodes a Mapbox Vector Tile with @mapbox/vector-tile (an independent decoder) and
// prints its layers as JSON, features in lon/lat. Usage: node mvt-decode.js FILE Z X Y
'use strict';
const fs = require('fs');
const Pbf = require('pbf');
const { VectorTile } = require('@mapbox/vector-tile');

const [file, z, x, y] = process.argv.slice(2);
// A fresh copy: Buffers from readFileSync may sit in a shared pool at an offset.
const bytes = Uint8Array.from(fs.readFileSync(file));
const tile = new VectorTile(new Pbf(bytes));
const out = {};
for (const name of Object.keys(tile.layers)) {
  const layer = tile.layers[name];
  const features = [];
  for (let i = 0; i < layer.length; i++) {
    const f = layer.feature(i);
    const gj = f.toGeoJSON(Number(x), Number(y), Number(z));
    features.push({ id: f.id, type: f.type, properties: f.properties, geometry: gj.geometry,
                    raw: f.loadGeometry().map(r => r.map(p => [p.x, p.y])) });
  }
  out[name] = { version: layer.version, extent: layer.extent, features };
}
process.stdout.write(JSON.stringify(out));
