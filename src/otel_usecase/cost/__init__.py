"""From a finished span to a priced call: the token-class table, the usage readers, the prices
(genai-prices, price conditions, the overrides file, or the provider's own figure), the
call records, and the call sink every consumer of priced calls subscribes to.
"""
