"""Files to tokens: every engine implements :class:`slipstream.engines.protocol.Engine`."""
