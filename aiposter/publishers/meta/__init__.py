"""Facebook Pages, Instagram and Threads on Meta's Graph APIs (httpx; no Meta SDK).

* :mod:`.graph`: the client (base URL + version from config, ``appsecret_proof``, error
  classification, usage headers, ambiguous timeouts);
* :mod:`.facebook`, :mod:`.instagram`, :mod:`.threads` (on :mod:`.containers`): the publishing steps;
* :mod:`.steps`: request/answer types and the media URL probe;
* :mod:`.tokens`, :mod:`.accounts`: token refresh and checks, the account picker, token import.

See docs/publishing.md.
"""
