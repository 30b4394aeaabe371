//! OpenAI wire types (chat and text completions, models, errors) and their validation.
