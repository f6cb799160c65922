"""check-deploy: what each OutputUrls choice of template.yaml deploys, its conditions resolved (cfn-lint checks the
syntax, not this). Run with the deploy venv's python (samtranslator parses the template's short-form functions)."""

import sys

from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
resources = template["Resources"]
errors = []


def resolve(node, params, conditions):
    """`node` with Ref to parameters, Fn::Equals/Not/And/Or/If and Condition evaluated; other functions kept."""
    if isinstance(node, list):
        out = [resolve(n, params, conditions) for n in node]
        return [n for n in out if n != {"Ref": "AWS::NoValue"}]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, value), = node.items()
        if key == "Ref" and value in params:
            return params[value]
        if key == "Condition" and isinstance(value, str):
            return conditions[value]
        if key == "Fn::Equals":
            a, b = (resolve(v, params, conditions) for v in value)
            return a == b
        if key == "Fn::Not":
            return not resolve(value[0], params, conditions)
        if key == "Fn::And":
            return all(resolve(v, params, conditions) for v in value)
        if key == "Fn::Or":
            return any(resolve(v, params, conditions) for v in value)
        if key == "Fn::If":
            name, then, other = value
            return resolve(then if conditions[name] else other, params, conditions)
    out = {k: resolve(v, params, conditions) for k, v in node.items()}
    return {k: v for k, v in out.items() if v != {"Ref": "AWS::NoValue"}}


def deployed(overrides):
    """(resources that exist, the global environment) for these parameter values."""
    params = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | overrides
    conditions = {}
    for name, expr in template["Conditions"].items():  # in order: a condition may use an earlier one
        conditions[name] = resolve(expr, params, conditions)
    exist = {n: resolve(r, params, conditions) for n, r in resources.items() if conditions.get(r.get("Condition"), True)}
    env = resolve(template["Globals"]["Function"]["Environment"]["Variables"], params, conditions)
    return exist, env


def check(mode, ok, what):
    if not ok:
        errors.append(f"OutputUrls={mode}: {what}")


def cloudfront_statements(exist):
    statements = exist["OutputsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    return [s for s in statements if s.get("Principal") == {"Service": "cloudfront.amazonaws.com"}]


def functions_overriding_base_url(exist):
    return [n for n, r in exist.items() if r["Type"] == "AWS::Serverless::Function"
            and "IMGPIPE_OUTPUT_BASE_URL" in r["Properties"].get("Environment", {}).get("Variables", {})]


# The default: CloudFront with origin access control, the bucket private, its domain the base URL.
exist, env = deployed({})
mode = "cloudfront (the default)"
check(mode, template["Parameters"]["OutputUrls"]["Default"] == "cloudfront", "not the default")
dist = exist.get("OutputsDistribution", {}).get("Properties", {}).get("DistributionConfig")
check(mode, dist is not None, "no OutputsDistribution")
if dist:
    origins = dist["Origins"]
    check(mode, len(origins) == 1, "the distribution should have exactly the outputs bucket as its origin")
    origin = origins[0]
    check(mode, origin["DomainName"] == {"Fn::GetAtt": ["OutputsBucket", "RegionalDomainName"]},
          f"the origin is not the outputs bucket: {origin['DomainName']}")
    check(mode, origin.get("OriginAccessControlId") == {"Fn::GetAtt": ["OutputsOriginAccessControl", "Id"]},
          "the origin is not signed by OutputsOriginAccessControl")
    check(mode, dist["DefaultCacheBehavior"]["ViewerProtocolPolicy"] in ("https-only", "redirect-to-https"),
          "viewers may use plain HTTP")
    check(mode, set(dist["DefaultCacheBehavior"]["AllowedMethods"]) == {"GET", "HEAD"}, "methods beyond GET/HEAD")
oac = exist.get("OutputsOriginAccessControl", {}).get("Properties", {}).get("OriginAccessControlConfig", {})
check(mode, oac.get("OriginAccessControlOriginType") == "s3" and oac.get("SigningBehavior") == "always",
      "no origin access control that signs every request to S3")
block = exist["OutputsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
check(mode, all(block.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                                               "RestrictPublicBuckets")), "the outputs bucket is not private")
statements = cloudfront_statements(exist)
check(mode, len(statements) == 1, f"{len(statements)} bucket policy statements for cloudfront.amazonaws.com")
for s in statements:
    check(mode, s["Effect"] == "Allow" and s["Action"] == "s3:GetObject", f"not just s3:GetObject: {s}")
    source = s.get("Condition", {}).get("StringEquals", {}).get("AWS:SourceArn", {})
    check(mode, "${OutputsDistribution}" in str(source.get("Fn::Sub", "")) and ":distribution/" in str(source),
          f"no AWS:SourceArn condition on OutputsDistribution's ARN: {source}")
check(mode, env.get("IMGPIPE_OUTPUT_BASE_URL") == {"Fn::Sub": "https://${OutputsDistribution.DomainName}"},
      f"IMGPIPE_OUTPUT_BASE_URL is {env.get('IMGPIPE_OUTPUT_BASE_URL')}, not the distribution's domain")
check(mode, "OutputsDistributionDomain" in template["Outputs"], "no output of the distribution's domain")

# Your own CDN: its URL, and nothing of CloudFront.
exist, env = deployed({"OutputUrls": "custom", "OutputBaseUrl": "https://cdn.example.com"})
check("custom", "OutputsDistribution" not in exist and "OutputsOriginAccessControl" not in exist,
      "creates a distribution")
check("custom", not cloudfront_statements(exist), "the bucket policy still admits CloudFront")
check("custom", env.get("IMGPIPE_OUTPUT_BASE_URL") == "https://cdn.example.com", "the functions do not get OutputBaseUrl")

# Private: no CDN, no base URL (the code hands out presigned URLs).
exist, env = deployed({"OutputUrls": "presigned"})
check("presigned", "OutputsDistribution" not in exist, "creates a distribution")
check("presigned", not cloudfront_statements(exist), "the bucket policy admits CloudFront")
check("presigned", "IMGPIPE_OUTPUT_BASE_URL" not in env, f"sets IMGPIPE_OUTPUT_BASE_URL={env.get('IMGPIPE_OUTPUT_BASE_URL')}")

for mode, overrides in (("cloudfront", {}), ("presigned", {"OutputUrls": "presigned"})):
    named = functions_overriding_base_url(deployed(overrides)[0])
    check(mode, not named, f"functions {named} override IMGPIPE_OUTPUT_BASE_URL")

if errors:
    sys.exit("\n".join(errors))
print("   cloudfront: distribution, origin access control, bucket readable by it alone (AWS:SourceArn), its domain"
      " as IMGPIPE_OUTPUT_BASE_URL; custom: OutputBaseUrl, no distribution; presigned: neither")
