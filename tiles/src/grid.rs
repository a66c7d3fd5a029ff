//! The XYZ tile grid of Web Mercator (EPSG:3857), as used by MapLibre, QGIS and
//! OpenLayers: z 0..=22, x from west, y from north.

use std::fmt;

pub const MAX_ZOOM: u8 = 22;
/// Half the Web Mercator world width, in metres.
pub const HALF_WORLD: f64 = 20_037_508.342_789_244;
/// Latitude where Web Mercator's square world ends.
pub const MAX_LAT: f64 = 85.051_128_779_806_59;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileId {
    pub z: u8,
    pub x: u32,
    pub y: u32,
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.z, self.x, self.y)
    }
}

impl TileId {
    /// Checks z, x and y against the grid; the message says what is out of range.
    pub fn new(z: u32, x: u64, y: u64) -> Result<TileId, String> {
        if z > u32::from(MAX_ZOOM) {
            return Err(format!("zoom {z} is out of range: use 0 to {MAX_ZOOM}"));
        }
        let n = 1u64 << z;
        if x >= n || y >= n {
            return Err(format!(
                "tile {z}/{x}/{y} is outside the grid: at zoom {z}, x and y go from 0 to {}",
                n - 1
            ));
        }
        Ok(TileId {
            z: z as u8,
            x: x as u32,
            y: y as u32,
        })
    }

    /// Tile size in Web Mercator metres.
    pub fn size_m(&self) -> f64 {
        2.0 * HALF_WORLD / f64::from(1u32 << self.z)
    }

    /// [minx, miny, maxx, maxy] in Web Mercator metres.
    pub fn bounds_m(&self) -> [f64; 4] {
        let s = self.size_m();
        let minx = -HALF_WORLD + f64::from(self.x) * s;
        let maxy = HALF_WORLD - f64::from(self.y) * s;
        [minx, maxy - s, minx + s, maxy]
    }

    /// [west, south, east, north] in degrees, grown by `buffer` tile units of `extent`.
    pub fn bounds_lonlat(&self, buffer: u32, extent: u32) -> [f64; 4] {
        let b = self.bounds_m();
        let pad = self.size_m() * f64::from(buffer) / f64::from(extent);
        let (w, s) = merc_to_lonlat(b[0] - pad, b[1] - pad);
        let (e, n) = merc_to_lonlat(b[2] + pad, b[3] + pad);
        [w.max(-180.0), s.max(-90.0), e.min(180.0), n.min(90.0)]
    }
}

pub fn lonlat_to_merc(lon: f64, lat: f64) -> (f64, f64) {
    let lat = lat.clamp(-MAX_LAT, MAX_LAT);
    let x = lon.to_radians() * 6_378_137.0;
    let y = (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
        .tan()
        .ln()
        * 6_378_137.0;
    (x, y)
}

/// Lon/lat to world units: normalised Web Mercator, x east and y down, both 0..1
/// (tile x/y at zoom z are world units times 2^z).
pub fn lonlat_to_world(lon: f64, lat: f64) -> (f64, f64) {
    let (x, y) = lonlat_to_merc(lon, lat);
    let w = 2.0 * HALF_WORLD;
    ((x + HALF_WORLD) / w, (HALF_WORLD - y) / w)
}

pub fn merc_to_lonlat(x: f64, y: f64) -> (f64, f64) {
    let lon = (x / 6_378_137.0).to_degrees();
    let lat = (2.0 * (y / 6_378_137.0).exp().atan() - std::f64::consts::FRAC_PI_2).to_degrees();
    (lon, lat)
}

/// Lon/lat to (fractional) tile coordinates of `tile` with `extent` units, y down.
#[derive(Debug, Clone, Copy)]
pub struct TileTransform {
    minx: f64,
    maxy: f64,
    scale: f64,
    /// The tile's corner in world units and world units → tile units.
    wx: f64,
    wy: f64,
    wscale: f64,
}

impl TileTransform {
    pub fn new(tile: TileId, extent: u32) -> Self {
        let b = tile.bounds_m();
        let n = f64::from(1u32 << tile.z);
        TileTransform {
            minx: b[0],
            maxy: b[3],
            scale: f64::from(extent) / tile.size_m(),
            wx: f64::from(tile.x) / n,
            wy: f64::from(tile.y) / n,
            wscale: f64::from(extent) * n,
        }
    }

    /// The same for a position already in world units (see [`lonlat_to_world`]):
    /// no trigonometry, which dominates dense point tiles.
    pub fn apply_world(&self, x: f64, y: f64) -> (f64, f64) {
        ((x - self.wx) * self.wscale, (y - self.wy) * self.wscale)
    }

    pub fn apply(&self, lon: f64, lat: f64) -> (f64, f64) {
        let (x, y) = lonlat_to_merc(lon, lat);
        ((x - self.minx) * self.scale, (self.maxy - y) * self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_limits() {
        assert!(TileId::new(0, 0, 0).is_ok());
        assert!(TileId::new(22, (1 << 22) - 1, 0).is_ok());
        assert!(TileId::new(23, 0, 0).unwrap_err().contains("zoom 23"));
        assert!(TileId::new(3, 8, 0).unwrap_err().contains("0 to 7"));
    }

    #[test]
    fn monterrey_tile_and_transform() {
        // Monterrey's centre (-100.31, 25.67) is in tile 12/906/1745.
        let t = TileId::new(12, 906, 1745).unwrap();
        let b = t.bounds_lonlat(0, 4096);
        assert!(
            b[0] <= -100.31 && -100.31 <= b[2] && b[1] <= 25.67 && 25.67 <= b[3],
            "{b:?}"
        );
        let tr = TileTransform::new(t, 4096);
        let (x, y) = tr.apply(-100.31, 25.67);
        assert!((0.0..4096.0).contains(&x) && (0.0..4096.0).contains(&y));
        let (x0, y0) = tr.apply(b[0], b[3]);
        assert!(x0.abs() < 1e-6 && y0.abs() < 1e-6);
        let (wx, wy) = lonlat_to_world(-100.31, 25.67);
        let (x1, y1) = tr.apply_world(wx, wy);
        assert!((x1 - x).abs() < 1e-6 && (y1 - y).abs() < 1e-6);
    }
}
