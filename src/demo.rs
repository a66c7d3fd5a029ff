//! The demo layers `make run` serves: generated deterministically inside Monterrey's
//! real extent, labelled synthetic in their metadata (no redistributable real city data
//! is available offline). They are written as the formats ministries actually send
//! (a CP1252 zipped Shapefile in EPSG:6372, a CSV of points, a GeoPackage in UTM 14N)
//! and go through the normal ingest pipeline, so the demo exercises it end to end.

use std::fs;
use std::path::{Path, PathBuf};

use gdal::spatial_ref::SpatialRef;
use gdal::vector::{
    Feature, FieldDefn, Geometry, LayerAccess, LayerOptions, OGRFieldType, OGRwkbGeometryType,
};
use gdal::DriverManager;
use layers::crs::FromStorage;
use layers::ingest::{self, IngestRequest};
use layers::store::LayerStore;

pub use layers::ingest::init_gdal;

/// Monterrey's urban extent (lon/lat).
pub const EXTENT: [f64; 4] = [-100.42, 25.62, -100.18, 25.78];

const COLONIAS: &[&str] = &[
    "Centro",
    "Obispado",
    "Mitras Centro",
    "Independencia",
    "Tecnológico",
    "San Jerónimo",
    "Cumbres",
    "Contry",
    "Buenos Aires",
    "Niño Artillero",
    "Moderna",
    "Anáhuac",
    "Vista Hermosa",
    "Chepevera",
    "María Luisa",
    "Del Norte",
    "Garza Nieto",
    "Terminal",
    "Valle de Santa Lucía",
    "Loma Larga",
    "Altavista",
    "Satélite",
    "La Pastora",
    "Rincón de la Sierra",
];

/// A small deterministic generator (no external randomness: the demo is reproducible).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
}

fn gdal_err(e: gdal::errors::GdalError) -> layers::Error {
    layers::Error::Gdal(e.to_string())
}

/// Generates the demo sources into `dir` and returns their paths.
pub fn write_sources(dir: &Path) -> layers::Result<Vec<(PathBuf, &'static str)>> {
    fs::create_dir_all(dir).map_err(|e| layers::Error::io(dir, e))?;
    Ok(vec![
        (write_colonias(dir)?, "colonias"),
        (write_reportes(dir)?, "reportes"),
        (write_red_pluvial(dir)?, "red-pluvial"),
    ])
}

fn write_colonias(dir: &Path) -> layers::Result<PathBuf> {
    let (cols, rows) = (8usize, 6usize);
    let mut rng = Lcg(6372);
    let [x0, y0, x1, y1] = EXTENT;
    // Jitter grid nodes (not cells) so neighbouring polygons share edges exactly.
    let mut nodes = vec![vec![(0.0, 0.0); cols + 1]; rows + 1];
    for (r, row) in nodes.iter_mut().enumerate() {
        for (c, node) in row.iter_mut().enumerate() {
            let dx = if c == 0 || c == cols {
                0.0
            } else {
                (rng.next() - 0.5) * 0.01
            };
            let dy = if r == 0 || r == rows {
                0.0
            } else {
                (rng.next() - 0.5) * 0.008
            };
            *node = (
                x0 + (x1 - x0) * c as f64 / cols as f64 + dx,
                y0 + (y1 - y0) * r as f64 / rows as f64 + dy,
            );
        }
    }
    let to6372 = FromStorage::new("EPSG:6372")?;
    let shp_dir = dir.join("colonias-shp");
    let _ = fs::remove_dir_all(&shp_dir);
    fs::create_dir_all(&shp_dir).map_err(|e| layers::Error::io(&shp_dir, e))?;
    {
        let driver = DriverManager::get_driver_by_name("ESRI Shapefile").map_err(gdal_err)?;
        let mut ds = driver
            .create_vector_only(shp_dir.join("colonias.shp"))
            .map_err(gdal_err)?;
        let srs = SpatialRef::from_epsg(6372).map_err(gdal_err)?;
        let layer = ds
            .create_layer(LayerOptions {
                name: "colonias",
                srs: Some(&srs),
                ty: OGRwkbGeometryType::wkbPolygon,
                options: Some(&["ENCODING=CP1252"]),
            })
            .map_err(gdal_err)?;
        for (name, t) in [
            ("nombre", OGRFieldType::OFTString),
            ("clave", OGRFieldType::OFTInteger),
            ("poblacion", OGRFieldType::OFTInteger),
            ("area_ha", OGRFieldType::OFTReal),
        ] {
            let f = FieldDefn::new(name, t).map_err(gdal_err)?;
            if name == "nombre" {
                f.set_width(60);
            }
            f.add_to_layer(&layer).map_err(gdal_err)?;
        }
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                let ring = [
                    nodes[r][c],
                    nodes[r][c + 1],
                    nodes[r + 1][c + 1],
                    nodes[r + 1][c],
                    nodes[r][c],
                ];
                let mut pts = Vec::new();
                for (lon, lat) in ring {
                    let (x, y) = to6372.point(lon, lat)?;
                    pts.push(format!("{x:.3} {y:.3}"));
                }
                let wkt = format!("POLYGON(({}))", pts.join(","));
                let geom = Geometry::from_wkt(&wkt).map_err(gdal_err)?;
                let area = geom.area() / 10_000.0;
                let base = COLONIAS[i % COLONIAS.len()];
                let name = if i < COLONIAS.len() {
                    base.to_string()
                } else {
                    format!("{base} Sur")
                };
                let mut f = Feature::new(layer.defn()).map_err(gdal_err)?;
                f.set_geometry(geom).map_err(gdal_err)?;
                f.set_field_string(0, &name).map_err(gdal_err)?;
                f.set_field_integer(1, 1000 + i as i32).map_err(gdal_err)?;
                f.set_field_integer(2, 2000 + (rng.next() * 18000.0) as i32)
                    .map_err(gdal_err)?;
                f.set_field_double(3, (area * 100.0).round() / 100.0)
                    .map_err(gdal_err)?;
                f.create(&layer).map_err(gdal_err)?;
            }
        }
    }
    let zip_path = dir.join("colonias.zip");
    crate::download::zip_folder(&shp_dir, &zip_path, "colonias/")?;
    let _ = fs::remove_dir_all(&shp_dir);
    Ok(zip_path)
}

fn write_reportes(dir: &Path) -> layers::Result<PathBuf> {
    let path = dir.join("reportes.csv");
    let mut rng = Lcg(311);
    let tipos = [
        ("Bache", "Bache en el carril derecho"),
        ("Luminaria apagada", "Poste sin iluminación"),
        ("Fuga de agua", "Fuga en la banqueta"),
        ("Basura", "Acumulación de basura en la esquina"),
        ("Semáforo", "Semáforo descompuesto en el crucero"),
    ];
    let mut s = String::from("folio,tipo,descripcion,fecha,atendido,longitud,latitud\n");
    let [x0, y0, x1, y1] = EXTENT;
    for i in 0..600 {
        let (tipo, desc) = tipos[(rng.next() * tipos.len() as f64) as usize % tipos.len()];
        let lon = x0 + (x1 - x0) * rng.next();
        let lat = y0 + (y1 - y0) * rng.next();
        let day = 1 + (rng.next() * 28.0) as u32;
        let month = 1 + (rng.next() * 12.0) as u32;
        let done = rng.next() < 0.6;
        s.push_str(&format!(
            "{},{tipo},{desc},2025-{month:02}-{day:02},{},{lon:.6},{lat:.6}\n",
            50_000 + i,
            if done { "true" } else { "false" }
        ));
    }
    fs::write(&path, s).map_err(|e| layers::Error::io(&path, e))?;
    Ok(path)
}

fn write_red_pluvial(dir: &Path) -> layers::Result<PathBuf> {
    let path = dir.join("red-pluvial.gpkg");
    let _ = fs::remove_file(&path);
    let to_utm = FromStorage::new("EPSG:32614")?;
    let mut rng = Lcg(32614);
    let driver = DriverManager::get_driver_by_name("GPKG").map_err(gdal_err)?;
    let mut ds = driver.create_vector_only(&path).map_err(gdal_err)?;
    let srs = SpatialRef::from_epsg(32614).map_err(gdal_err)?;
    let layer = ds
        .create_layer(LayerOptions {
            name: "colectores",
            srs: Some(&srs),
            ty: OGRwkbGeometryType::wkbLineString,
            options: None,
        })
        .map_err(gdal_err)?;
    for (name, t) in [
        ("nombre", OGRFieldType::OFTString),
        ("diametro_cm", OGRFieldType::OFTInteger),
        ("material", OGRFieldType::OFTString),
        ("instalado", OGRFieldType::OFTDate),
    ] {
        FieldDefn::new(name, t)
            .map_err(gdal_err)?
            .add_to_layer(&layer)
            .map_err(gdal_err)?;
    }
    let materiales = ["Concreto", "PVC", "Polietileno de alta densidad", "Acero"];
    let [x0, y0, x1, y1] = EXTENT;
    for i in 0..40 {
        let mut lon = x0 + (x1 - x0) * rng.next();
        let mut lat = y0 + (y1 - y0) * rng.next();
        let n = 5 + (rng.next() * 6.0) as usize;
        let mut pts = Vec::new();
        for _ in 0..n {
            let (x, y) = to_utm.point(lon, lat)?;
            pts.push(format!("{x:.2} {y:.2}"));
            lon = (lon + (rng.next() - 0.3) * 0.01).clamp(x0, x1);
            lat = (lat + (rng.next() - 0.5) * 0.01).clamp(y0, y1);
        }
        let geom =
            Geometry::from_wkt(&format!("LINESTRING({})", pts.join(","))).map_err(gdal_err)?;
        let mut f = Feature::new(layer.defn()).map_err(gdal_err)?;
        f.set_geometry(geom).map_err(gdal_err)?;
        f.set_field_string(0, &format!("Colector pluvial {}", i + 1))
            .map_err(gdal_err)?;
        f.set_field_integer(1, [45, 61, 91, 122, 152][i % 5])
            .map_err(gdal_err)?;
        f.set_field_string(2, materiales[i % materiales.len()])
            .map_err(gdal_err)?;
        f.set_field_string(3, &format!("{}-0{}-15", 1995 + i, 1 + i % 9))
            .map_err(gdal_err)?;
        f.create(&layer).map_err(gdal_err)?;
    }
    Ok(path)
}

/// Ingests each demo layer that is not in the store yet; returns what it did.
pub fn ensure_demo(store: &dyn LayerStore) -> layers::Result<Vec<String>> {
    let existing = store.layer_ids()?;
    let wanted = ["colonias", "reportes", "red-pluvial"];
    if wanted.iter().all(|w| existing.iter().any(|e| e == w)) {
        return Ok(vec!["demo layers already present; nothing to do".into()]);
    }
    let dir = store.data_dir().join("demo-sources");
    let sources = write_sources(&dir)?;
    let mut out = Vec::new();
    for (path, id) in sources {
        if existing.iter().any(|e| e == id) {
            out.push(format!("{id}: already present"));
            continue;
        }
        let (title, ministry, desc) = match id {
            "colonias" => (
                "Colonias (sintético)",
                "desarrollo-urbano",
                "Límites de colonias de Monterrey. DATOS SINTÉTICOS generados para demostración.",
            ),
            "reportes" => (
                "Reportes ciudadanos (sintético)",
                "servicios-publicos",
                "Reportes de servicios públicos. DATOS SINTÉTICOS generados para demostración.",
            ),
            _ => (
                "Red de drenaje pluvial (sintético)",
                "obras-publicas",
                "Colectores pluviales. DATOS SINTÉTICOS generados para demostración.",
            ),
        };
        let req = IngestRequest {
            title: Some(title.into()),
            description: desc.into(),
            synthetic: true,
            // The demo is the open-data portal's sample: everything in it is public.
            record: layers::store::RecordEdit {
                access: Some(layers::store::Access::Public),
                keywords: Some(vec!["demo".into(), "sintético".into(), "monterrey".into()]),
                license: Some(layers::store::DEFAULT_LICENSE.into()),
                contact_name: Some("DataHub Monterrey".into()),
                contact_email: Some("datos.abiertos@monterrey.gob.mx".into()),
                update_frequency: Some("R/P1M".into()),
                ..Default::default()
            },
            uploaded_by: Some("demo".into()),
            ..IngestRequest::new(path, id, ministry)
        };
        let s = ingest::ingest(store, &req, &|_| {})?;
        out.push(format!(
            "{id}: version {} with {} features",
            s.meta.version, s.meta.feature_count
        ));
    }
    Ok(out)
}
