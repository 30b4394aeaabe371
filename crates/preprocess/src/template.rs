//! The checkpoint's own chat template, rendered with minijinja as transformers'
//! `apply_chat_template` renders it with jinja2 (trim_blocks, lstrip_blocks,
//! `raise_exception`, Python string methods).

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;
use serde_json::Value as Json;

use crate::error::PreprocessError;

/// One chat message as the template sees it: `content` is a string or a list of
/// parts (`{"type":"text","text":..}`, `{"type":"image"}`).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    pub role: String,
    pub content: Json,
}

impl TemplateMessage {
    pub fn text(role: &str, text: &str) -> Self {
        Self {
            role: role.into(),
            content: Json::String(text.into()),
        }
    }
}

#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, PreprocessError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(NAME, source)
            .map_err(|e| PreprocessError::Template {
                at: None,
                msg: format!("the checkpoint's chat template does not parse: {e}"),
            })?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Finds the template of a checkpoint folder: `chat_template.jinja`,
    /// `chat_template.json`, or `tokenizer_config.json`'s `chat_template`
    /// (a string, or a list of named templates of which "default" is taken).
    pub fn find_source(
        dir: &Path,
        tokenizer_config: Option<&Json>,
    ) -> Result<String, PreprocessError> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            return read(&jinja);
        }
        let json = dir.join("chat_template.json");
        if json.exists() {
            let v: Json =
                serde_json::from_str(&read(&json)?).map_err(|e| PreprocessError::File {
                    path: json.display().to_string(),
                    msg: e.to_string(),
                })?;
            if let Some(t) = template_value(v.get("chat_template")) {
                return Ok(t);
            }
        }
        template_value(tokenizer_config.and_then(|c| c.get("chat_template")))
            .ok_or(PreprocessError::NoChatTemplate)
    }

    /// Renders the conversation, with the generation prompt appended when asked.
    /// A template error names the first message at which the conversation fails
    /// (found by rendering ever longer prefixes), so a client knows what to fix.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, PreprocessError> {
        self.render_raw(messages, add_generation_prompt)
            .map_err(|msg| {
                let at =
                    (1..=messages.len()).find(|&k| self.render_raw(&messages[..k], false).is_err());
                PreprocessError::Template {
                    at: at.map(|k| k - 1),
                    msg,
                }
            })
    }

    fn render_raw(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let tmpl = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        tmpl.render(ctx).map_err(|e| describe(&e))
    }
}

fn template_value(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(String::from),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, PreprocessError> {
    std::fs::read_to_string(path).map_err(|e| PreprocessError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// The template's own message for `raise_exception`, else minijinja's description.
fn describe(e: &minijinja::Error) -> String {
    match e.kind() {
        ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMMA: &str = include_str!("../../../tools/fixtures/chat_template.jinja");

    fn template() -> ChatTemplate {
        ChatTemplate::new(GEMMA.into(), "<bos>".into(), "<eos>".into()).unwrap()
    }

    #[test]
    fn system_prompt_joins_the_first_user_turn() {
        let msgs = [
            TemplateMessage::text("system", "Be brief."),
            TemplateMessage::text("user", "  Hi  "),
            TemplateMessage::text("assistant", "Hello."),
            TemplateMessage::text("user", "Bye"),
        ];
        let out = template().render(&msgs, true).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn parts_keep_their_order() {
        let content = serde_json::json!([{"type":"text","text":"Before "},{"type":"image"},{"type":"text","text":" after"},{"type":"image"}]);
        let msgs = [TemplateMessage {
            role: "user".into(),
            content,
        }];
        let out = template().render(&msgs, false).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBefore<start_of_image>after<start_of_image><end_of_turn>\n"
        );
    }

    #[test]
    fn roles_that_do_not_alternate_raise_the_templates_message() {
        let msgs = [
            TemplateMessage::text("user", "a"),
            TemplateMessage::text("user", "b"),
        ];
        let err = template().render(&msgs, true).unwrap_err().to_string();
        assert!(err.contains("Conversation roles must alternate"), "{err}");
        assert!(err.contains("messages[1]"), "names the message: {err}");
    }

    #[test]
    fn template_lists_and_files_are_found() {
        let dir = std::env::temp_dir().join(format!("mg-tmpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = serde_json::json!({"chat_template":[{"name":"tool_use","template":"x"},{"name":"default","template":"D"}]});
        assert_eq!(ChatTemplate::find_source(&dir, Some(&cfg)).unwrap(), "D");
        std::fs::write(dir.join("chat_template.json"), r#"{"chat_template":"J"}"#).unwrap();
        assert_eq!(ChatTemplate::find_source(&dir, Some(&cfg)).unwrap(), "J");
        std::fs::write(dir.join("chat_template.jinja"), "K").unwrap();
        assert_eq!(ChatTemplate::find_source(&dir, Some(&cfg)).unwrap(), "K");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            ChatTemplate::find_source(&dir, None),
            Err(PreprocessError::NoChatTemplate)
        ));
    }
}
