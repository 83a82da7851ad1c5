"""The VL-CLIP text agent: prompts, LLM backends (OpenAI-compatible HTTP, local transformers), the agent."""
