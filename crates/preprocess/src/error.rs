use thiserror::Error;

#[derive(Debug, Error)]
pub enum PreprocessError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("the checkpoint has no chat template (tokenizer_config.json chat_template, chat_template.json or chat_template.jinja)")]
    NoChatTemplate,
    /// The template raised or failed on these messages (roles not alternating, say);
    /// `at`: the first message at which the conversation fails, when known.
    #[error("chat template: {}{msg}", at.map(|k| format!("messages[{k}]: ")).unwrap_or_default())]
    Template { at: Option<usize>, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The prompt's image markers and the images given do not match.
    #[error("the prompt has {markers} image markers but {images} images were given")]
    ImageCount { markers: usize, images: usize },
    /// The text itself holds image tokens, so the placeholders do not line up with
    /// the images.
    #[error("the messages' text holds image tokens of its own: the prompt tokenizes to {found} image placeholders for {images} images")]
    ImagePlaceholders { found: usize, images: usize },
    #[error(transparent)]
    Image(#[from] crate::decode::ImageError),
}
