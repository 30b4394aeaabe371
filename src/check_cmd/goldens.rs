//! transformers' reference outputs for a fixture checkpoint (`goldens.json`, made
//! by tools/fixtures/make_fixtures.py): each prompt's input ids and its greedy ids
//! with the end-of-sequence ids suppressed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One prompt of a goldens file.
#[derive(Debug, Clone)]
pub struct GoldenPrompt {
    pub name: String,
    pub input_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    /// transformers' first greedy token in bf16, when recorded.
    pub bf16_first_token: Option<u32>,
}

/// A fixture's goldens.
#[derive(Debug, Clone)]
pub struct Goldens {
    /// Ids suppressed during the greedy runs (end of sequence).
    pub eos_suppressed: Vec<u32>,
    pub prompts: Vec<GoldenPrompt>,
}

/// Reads `path`.
pub fn load(path: &Path) -> Result<Goldens> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// Parses a goldens document.
pub fn parse(text: &str) -> Result<Goldens> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let eos_suppressed = ids(&v["eos_suppressed_in_greedy"], "eos_suppressed_in_greedy")?;
    let Some(prompts) = v["prompts"].as_object() else {
        bail!("no \"prompts\" object");
    };
    let prompts = prompts
        .iter()
        .map(|(name, p)| {
            Ok(GoldenPrompt {
                name: name.clone(),
                input_ids: ids(&p["input_ids"], &format!("{name}.input_ids"))?,
                greedy_ids: ids(&p["greedy_ids"], &format!("{name}.greedy_ids"))?,
                bf16_first_token: p["bf16_first_token"].as_u64().map(|t| t as u32),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if prompts.is_empty() {
        bail!("\"prompts\" is empty");
    }
    Ok(Goldens {
        eos_suppressed,
        prompts,
    })
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>> {
    let Some(list) = v.as_array() else {
        bail!("{what} is not a list of token ids");
    };
    list.iter()
        .map(|x| match x.as_u64() {
            Some(id) if id <= u64::from(u32::MAX) => Ok(id as u32),
            _ => bail!("{what} holds {x}, not a token id"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompts_and_reports_what_is_missing() {
        let g = parse(
            r#"{"eos_suppressed_in_greedy": [1, 6],
                "prompts": {"hi": {"input_ids": [2, 5], "greedy_ids": [9, 9], "bf16_first_token": 9}}}"#,
        )
        .expect("parses");
        assert_eq!(g.eos_suppressed, vec![1, 6]);
        assert_eq!(g.prompts[0].name, "hi");
        assert_eq!(g.prompts[0].greedy_ids, vec![9, 9]);
        assert_eq!(g.prompts[0].bf16_first_token, Some(9));
        let err =
            parse(r#"{"eos_suppressed_in_greedy": [], "prompts": {"x": {"input_ids": [-1]}}}"#)
                .expect_err("bad ids");
        assert!(format!("{err:#}").contains("x.input_ids"), "{err:#}");
    }

    #[test]
    fn the_checked_in_goldens_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for name in ["tiny-gemma3", "tiny-gemma3-text"] {
            let g = load(&dir.join(name).join("goldens.json")).expect(name);
            assert!(g
                .prompts
                .iter()
                .all(|p| !p.input_ids.is_empty() && !p.greedy_ids.is_empty()));
        }
    }
}
