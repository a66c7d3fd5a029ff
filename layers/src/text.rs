//! The one text normalization of the DataHub: how names are compared when case,
//! accents, punctuation and abbreviations should not matter. Catalogue search, CQL2's
//! ACCENTI, the diagnosis' spelling checks and name joins of tables to zones all use
//! these functions, so "SAN NICOLAS DE LOS GARZA", "San Nicolás de los Garza" and
//! "Gral. Escobedo" / "General Escobedo" compare the same way everywhere.

/// The letter without its accent, keeping case: 'Á' → 'A', 'ñ' → 'n', 'ç' → 'c'.
/// Covers Latin-1 and the Latin Extended-A letters that appear in names typed in
/// Mexico and in the data of other agencies; anything else is returned unchanged.
pub fn base_char(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'Á' | 'À' | 'Â' | 'Ä' | 'Ã' | 'Å' | 'Ā' | 'Ă' | 'Ą' => 'A',
        'é' | 'è' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'É' | 'È' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => 'E',
        'í' | 'ì' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => 'i',
        'Í' | 'Ì' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => 'I',
        'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'Ó' | 'Ò' | 'Ô' | 'Ö' | 'Õ' | 'Ø' | 'Ō' | 'Ŏ' | 'Ő' => 'O',
        'ú' | 'ù' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'Ú' | 'Ù' | 'Û' | 'Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => 'U',
        'ñ' | 'ń' | 'ň' => 'n',
        'Ñ' | 'Ń' | 'Ň' => 'N',
        'ç' | 'ć' | 'č' => 'c',
        'Ç' | 'Ć' | 'Č' => 'C',
        'ý' | 'ÿ' => 'y',
        'Ý' | 'Ÿ' => 'Y',
        'š' | 'ś' => 's',
        'Š' | 'Ś' => 'S',
        'ž' | 'ź' | 'ż' => 'z',
        'Ž' | 'Ź' | 'Ż' => 'Z',
        c => c,
    }
}

/// Accents removed, case and everything else kept (CQL2 `ACCENTI`).
pub fn strip_accents(s: &str) -> String {
    s.chars().map(base_char).collect()
}

/// Lowercase words without accents, separated by single spaces; every character that
/// is not a letter or digit separates words ("Niños-Héroes, 2" → "ninos heroes 2").
pub fn words(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars().flat_map(char::to_lowercase).map(base_char) {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else {
            space = true;
        }
    }
    out
}

/// Letters and digits only, lowercase, without accents ("Gral. Escobedo" →
/// "gralescobedo"): for spotting spellings of the same value.
pub fn compact(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(base_char)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Abbreviations common in Mexican place names and addresses, by their folded form.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("gral", "general"),
    ("grl", "general"),
    ("cd", "ciudad"),
    ("sta", "santa"),
    ("sto", "santo"),
    ("sn", "san"),
    ("col", "colonia"),
    ("fracc", "fraccionamiento"),
    ("fracto", "fraccionamiento"),
    ("av", "avenida"),
    ("ave", "avenida"),
    ("blvd", "bulevar"),
    ("pte", "poniente"),
    ("ote", "oriente"),
    ("nte", "norte"),
    ("lic", "licenciado"),
    ("ing", "ingeniero"),
    ("dr", "doctor"),
    ("mpio", "municipio"),
    ("edo", "estado"),
    ("ma", "maria"),
    ("nvo", "nuevo"),
    ("pdte", "presidente"),
    ("hda", "hacienda"),
    ("ej", "ejido"),
    ("prol", "prolongacion"),
    ("unid", "unidad"),
    ("u", "unidad"),
    ("hab", "habitacional"),
];

/// The key two place names are matched by: [`words`] with abbreviations written out
/// ("Gral. Escobedo" and "GENERAL ESCOBEDO" → "general escobedo").
pub fn name_key(s: &str) -> String {
    let w = words(s);
    let mut out = String::with_capacity(w.len() + 8);
    for word in w.split(' ') {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let long = ABBREVIATIONS
            .iter()
            .find(|(a, _)| *a == word)
            .map_or(word, |(_, l)| l);
        out.push_str(long);
    }
    out
}

/// How alike two name keys are, from 0 (nothing shared) to 1 (equal): the better of
/// Jaro-Winkler on the whole keys and the share of words in common, so a typo
/// ("quertaro") and a longer official name ("coahuila de zaragoza") both rank high.
pub fn similarity(a: &str, b: &str) -> f64 {
    let jw = strsim::jaro_winkler(a, b);
    let wa: Vec<&str> = a.split(' ').filter(|w| !w.is_empty()).collect();
    let wb: Vec<&str> = b.split(' ').filter(|w| !w.is_empty()).collect();
    if wa.is_empty() || wb.is_empty() {
        return jw;
    }
    let common = wa.iter().filter(|w| wb.contains(w)).count();
    let overlap = common as f64 / wa.len().max(wb.len()) as f64;
    jw.max(overlap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_for_every_use() {
        assert_eq!(strip_accents("Ñuñoa ÁRBOL"), "Nunoa ARBOL");
        assert_eq!(words("  Niños-Héroes, 2 "), "ninos heroes 2");
        assert_eq!(compact("San Nicolás"), compact("SAN NICOLAS"));
        assert_eq!(name_key("Gral. Escobedo"), name_key("General Escobedo"));
        assert_eq!(
            name_key("SAN NICOLAS DE LOS GARZA"),
            name_key("San Nicolás de los Garza")
        );
        assert_eq!(name_key("Cd. Guadalupe"), "ciudad guadalupe");
    }

    #[test]
    fn similar_names_rank_high() {
        let q = name_key("Quertaro");
        let right = similarity(&q, &name_key("Queretaro de Arteaga"));
        let wrong = similarity(&q, &name_key("Quintana Roo"));
        assert!(right > wrong, "{right} {wrong}");
        assert!(
            similarity(&name_key("Coahuila"), &name_key("Coahuila De Zaragoza"))
                > similarity(&name_key("Coahuila"), &name_key("Colima"))
        );
    }
}
