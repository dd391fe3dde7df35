"""Who is calling: API keys and the client address behind trusted proxies."""
