{#- The IQ gateway's decoding (GW decodeAssetData, docs/protocol.md §5): which rule turns
    an upload's joined text into the file bytes the gateway serves, and Node's base64 decoding,
    which that rule relies on. Kept in SQL so upload_payloads can store the file bytes and their
    sha256 exactly as a reader would get them from the gateway. -#}

{#- Base64 decoding as Node's Buffer.from(text, 'base64') does it (what the IQ gateway runs):
    decoding stops at the first '=', the URL-safe alphabet is accepted, any other character is
    skipped, and a dangling 6-bit group is dropped. Strictly valid base64 decodes identically.
    (The lambda over a one-element array binds the cleaned text once without a query-wide alias.) -#}
{% macro node_base64_decode(text) -%}
arrayElement(arrayMap(b64_text -> tryBase64Decode(multiIf(
        length(b64_text) % 4 = 1, substring(b64_text, 1, length(b64_text) - 1),
        length(b64_text) % 4 = 2, concat(b64_text, '=='),
        length(b64_text) % 4 = 3, concat(b64_text, '='),
        b64_text)),
    [replaceRegexpAll(translate(
        substringIndex({{ text }}, '=', 1),
        '-_', '+/'), '[^A-Za-z0-9+/]', '')]), 1)
{%- endmacro %}

{#- Which rule the IQ gateway applies to joined text:
    'data_url' (starts with data: and has a comma), 'base64' (longer than 100 and the first 100
    characters are all base64 alphabet), else 'text'. A data: prefix without a comma makes the
    gateway throw; here it falls to 'text' (the bytes as they are). -#}
{% macro gateway_decode_rule(text) -%}
multiIf(
    startsWith({{ text }}, 'data:') AND position({{ text }}, ',') > 0, 'data_url',
    length({{ text }}) > 100 AND match(substring({{ text }}, 1, 100), '^[A-Za-z0-9+/=]+$'), 'base64',
    'text')
{%- endmacro %}

{#- The file bytes the gateway would serve for joined text, under the rule above. data: URLs
    decode the part between the first and second comma, as JS `split(",")[1]` does. -#}
{% macro gateway_file_bytes(text, rule) -%}
multiIf(
    {{ rule }} = 'data_url', {{ node_base64_decode("splitByChar(',', " ~ text ~ ")[2]") }},
    {{ rule }} = 'base64', {{ node_base64_decode(text) }},
    {{ text }})
{%- endmacro %}
