#!/usr/bin/perl
# Hardening from the security review (issue 12):
#  7. the client's identity headers never reach a provider, unless
#     llm_router_pass_header keeps one (never a credential header);
#  8. a key with control characters never reaches a provider: rejected
#     by nginx -t, or, computed from variables, refused per request;
#  9. a client pins only the models its location can route to, or those
#     llm_router_pin names;
# 10. configurations that would fail every request fail nginx -t;
# 12. the variables the docs name exist; the docs warn of the debug log.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(user route_of);

my $t = LLMRouterTest->new;
$t->mock($_) for qw(p inj m);
$t->mock('keyed', key => 'sk-keyed');

my @configs;      # [name, config, expected message (regex), or 'passed']

# ------------------------------------------------------------ nginx -t

# models a (messages: "sonnet"), a location with the router on and the
# extra directives $loc (default "a" unless $loc sets its own or
# no_default), and extra http-level directives
sub conf {
    my ($loc, %o) = @_;
    $o{$_} //= '' for qw(http server enable proxy extra);
    my $default = $o{no_default} || $loc =~ /llm_router_default/
                ? '' : 'llm_router_default a;';
    my $path = $o{path} // '/';
    return <<"EOF";
llm_router_model a { url http://127.0.0.1:1/v1/chat/completions; auth none; }
llm_router_model b { url http://127.0.0.1:1/v1/chat/completions; auth none; }
llm_router_model sonnet { api messages; url http://127.0.0.1:1/v1/messages; auth none; }
$o{http}
server {
    listen 127.0.0.1:%%PORT%%;
    $o{server}
    location $path {
        $o{enable}
        $default
        $loc
        $o{proxy}
    }
    $o{extra}
}
EOF
}

sub routed { my ($loc, %o) = @_; conf($loc, enable => 'llm_router on;', proxy => 'proxy_pass $llm_router_url;', %o) }

sub emerg {
    my ($conf) = @_;
    my ($ok, $out) = $t->config($conf)->nginx_test;
    return 'passed' if $ok;
    my ($e) = $out =~ /\[emerg\] (?:\d+#\d+: )?(.*)$/m or return $out;
    return $e =~ s/ in \S*nginx\.conf:\d+/ in nginx.conf:N/gr;
}

$t->write_file('crlf.key', "sk-good\r\nX-Injected: yes\n");
$t->write_file('nul.key', "sk-\0bad\n");
$t->write_file('esc.key', "sk-\x1bbad");
$t->write_file('ok.key', "sk-ok\n");
$t->write_file('okcrlf.key', "sk-ok\r\n");

push @configs,
    # 7: what llm_router_pass_header takes
    ['pass_header of a header the router removes', routed('llm_router_pass_header OpenAI-Organization; llm_router_pass_header cookie;'), 'passed'],
    ['pass_header with underscores and any case', routed('llm_router_pass_header openai_PROJECT;'), 'passed'],
    ['pass_header Authorization', routed('llm_router_pass_header Authorization;'),
     qr/^"llm_router_pass_header" cannot pass "Authorization": .*credential/],
    ['pass_header x-api-key', routed('llm_router_pass_header X-Api-Key;'),
     qr/^"llm_router_pass_header" cannot pass "X-Api-Key"/],
    ['pass_header x_api_key', routed('llm_router_pass_header x_api_key;'),
     qr/^"llm_router_pass_header" cannot pass "x_api_key"/],
    ['pass_header api-key', routed('llm_router_pass_header api-key;'),
     qr/^"llm_router_pass_header" cannot pass "api-key"/],
    ['pass_header Accept-Encoding', routed('llm_router_pass_header Accept-Encoding;'),
     qr/^"llm_router_pass_header" cannot pass "Accept-Encoding"/],
    ['pass_header of a header that passes anyway', routed('llm_router_pass_header X-Request-Id;'),
     qr/^invalid header "X-Request-Id" in "llm_router_pass_header"/],

    # 8: keys
    ['key with CR LF', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key "sk-a\r\nX-Injected: yes"; }'),
     qr/^invalid "key" in llm_router_model "k": .*control character/],
    ['key with a tab', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key "sk-a\tb"; }'),
     qr/^invalid "key" in llm_router_model "k": .*control character/],
    ['key with a variable and CR LF', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key "$http_x_key\r\nX-Injected: yes"; }'),
     qr/^invalid "key" in llm_router_model "k": .*control character/],
    ['empty key', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key ""; }'),
     qr/^invalid "key" in llm_router_model "k": .*empty/],
    ['key_file with CR LF inside', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key_file %%PREFIX%%/crlf.key; }'),
     qr/^"key_file" of llm_router_model "k": .*crlf\.key.* control character/],
    ['key_file with NUL', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key_file %%PREFIX%%/nul.key; }'),
     qr/^"key_file" of llm_router_model "k": .* control character/],
    ['key_file with ESC', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key_file %%PREFIX%%/esc.key; }'),
     qr/^"key_file" of llm_router_model "k": .* control character/],
    ['key_file with a trailing newline', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key_file %%PREFIX%%/ok.key; }'), 'passed'],
    ['key_file with a trailing CR LF', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key_file %%PREFIX%%/okcrlf.key; }'), 'passed'],
    ['key with a variable', conf('', http => 'llm_router_model k { url http://127.0.0.1:1/; key "sk-$http_x_key"; }'), 'passed'],

    # 9: llm_router_pin NAME ...
    ['llm_router_pin names a model', routed('llm_router_pin b sonnet;'), 'passed'],
    ['llm_router_pin names an unknown model', routed('llm_router_pin b nosuch;'),
     qr/^unknown model "nosuch" in "llm_router_pin" in nginx.conf:N$/],
    ['llm_router_pin names a model of another api', routed('llm_router_api chat; llm_router_pin sonnet;'),
     qr/^"llm_router_api chat" can reach model "sonnet" of "api messages" by llm_router_pin in nginx.conf:N$/],
    ['llm_router_pin on and a name', routed('llm_router_pin on b;'),
     qr/^invalid value "on" in "llm_router_pin"/],

    # 10: would fail every request
    ['router on without rules and default', routed('', no_default => 1),
     qr/^"llm_router" is on in location "\/" without "llm_router_default" .*500/],
    ['router on with rules but no default', routed('llm_router_rule r tokens>10 a;', no_default => 1),
     qr/^"llm_router" is on in location "\/" without "llm_router_default": a request that no rule matches .*500/],
    ['router on at the server level, default in the location', routed('', no_default => 1, server => 'llm_router on;',
                                                                        enable => 'llm_router_default a;'),
     'passed'],
    ['url with a space', conf('', http => 'llm_router_model k { url "http://127.0.0.1:1/v1/ chat"; auth none; }'),
     qr/^invalid "url" in llm_router_model "k": .*space/],
    ['url with a tab', conf('', http => 'llm_router_model k { url "http://127.0.0.1:1/v1/\tchat"; auth none; }'),
     qr/^invalid "url" in llm_router_model "k": .*control/],
    ['url with CR LF', conf('', http => 'llm_router_model k { url "http://127.0.0.1:1/v1\r\nX-Injected: 1"; auth none; }'),
     qr/^invalid "url" in llm_router_model "k"/],
    ['llm_router on and llm_router_explain', conf('llm_router on; llm_router_explain;'),
     qr/^"llm_router on" and "llm_router_explain" are in the same location "\/"/],
    ['llm_router_explain alone', conf('llm_router_explain;'), 'passed'],
    ['llm_router_explain, router on at the server', conf('llm_router_explain;', server => 'llm_router on;'), 'passed'],
    ['llm_router on and llm_router_status', conf('llm_router on; llm_router_status;', no_default => 1),
     qr/^"llm_router on" and "llm_router_status" are in the same location "\/"/],
    ['llm_router_status, router on at the server', conf('llm_router_status;', no_default => 1, server => 'llm_router on; llm_router_default a;'),
     qr/^"llm_router on" and "llm_router_status" are in the same location "\/"/],
    ['triage URI is the routing location', routed('llm_router_triage /v1/chat/completions model=b; llm_router_rule t triage=complex b;',
                                                   path => '= /v1/chat/completions'),
     qr{^the URI "/v1/chat/completions" of "llm_router_triage" is the location that routes in nginx.conf:N$}],
    ['triage URI is the routing prefix location', routed('llm_router_triage /v1/ model=b; llm_router_rule t triage=complex b;',
                                                        path => '/v1/'),
     qr{^the URI "/v1/" of "llm_router_triage" is the location that routes in nginx.conf:N$}],
    ['triage URI of its own', routed('llm_router_triage /_triage model=b; llm_router_rule t triage=complex b;',
                                     path => '= /v1/chat/completions',
                                     extra => 'location = /_triage { internal; proxy_pass http://127.0.0.1:1; }'),
     'passed'];

# ------------------------------------------------------------ running

my $running = <<'EOF';
map $http_x_tenant $inj_key {
    default  sk-fine;
    evil     "sk-x\r\nX-Injected: yes";
    ctl      "sk-\tx";
}

llm_router_zone z 1m;
llm_router_budget bud key=$remote_addr limit=1000 period=day action=downgrade:e;

llm_router_model keyed { url %%URL_keyed%%; key sk-keyed; }
llm_router_model inj   { url %%URL_inj%%; key $inj_key; }
llm_router_model a      { url %%URL_m%%; model up-a; auth none; fallback c; }
llm_router_model b      { url %%URL_m%%; model up-b; auth none; escalate d; }
llm_router_model c      { url %%URL_m%%; model up-c; auth none; }
llm_router_model d      { url %%URL_m%%; model up-d; auth none; }
llm_router_model e      { url %%URL_m%%; model up-e; auth none; }
llm_router_model claude { url %%URL_m%%; model up-claude; auth none; }
llm_router_model sonnet { api messages; url %%URL_m%%; model up-sonnet; auth none; }

server {
    listen 127.0.0.1:%%PORT%%;
    underscores_in_headers on;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default keyed;
        proxy_pass $llm_router_url;
    }

    location = /pass {
        llm_router on;
        llm_router_default keyed;
        llm_router_pass_header OpenAI-Organization;
        llm_router_pass_header cookie;
        proxy_pass $llm_router_url;
    }

    location = /inj {
        llm_router on;
        llm_router_default inj;
        proxy_pass $llm_router_url;
    }

    location = /pin {
        llm_router on;
        llm_router_rule big tokens>2000 a;
        llm_router_default b;
        llm_router_budget bud;
        proxy_pass $llm_router_url;
    }

    location = /wide {
        llm_router on;
        llm_router_pin claude sonnet;
        llm_router_rule big tokens>2000 a;
        llm_router_default b;
        proxy_pass $llm_router_url;
    }
}
EOF

my @identity = ('OpenAI-Organization' => 'org-client', 'OpenAI-Project' => 'proj-client',
                'Proxy-Authorization' => 'Basic Y2xpZW50OnByb3h5', 'x-goog-api-key' => 'goog-client',
                'Cookie' => 'session=cookie-client', 'x_api_key' => 'underscore-client',
                'X_API_KEY' => 'underscore-client-2', 'Api_Key' => 'underscore-client-3',
                'Authorization' => 'Bearer bearer-client', 'openai_organization' => 'org-underscore');
my @kept = ('anthropic-version' => '2023-06-01', 'anthropic-beta' => 'tools-2024-04-04',
            'X-Custom' => 'custom-kept', 'OpenAI-Beta' => 'assistants=v2');

# [name, path, headers removed (lower case, as sent), headers kept]
my @header_cases = (
    ['identity headers are removed', '/v1/chat/completions',
     [qw(openai-organization openai-project proxy-authorization x-goog-api-key cookie
         x_api_key api_key openai_organization)],
     [qw(anthropic-version anthropic-beta x-custom openai-beta)]],
    ['llm_router_pass_header keeps the ones named', '/pass',
     [qw(openai-project proxy-authorization x-goog-api-key x_api_key api_key)],
     [qw(openai-organization cookie openai_organization anthropic-version anthropic-beta x-custom)]],
);

# [name, path, model, expected MODEL/RULE]
my @pin_cases = (
    ['a model of no rule is not pinned', '/pin', 'claude', 'b/default'],
    ['nor by its upstream name', '/pin', 'up-claude', 'b/default'],
    ['a model of a rule is pinned', '/pin', 'a', 'a/client'],
    ['the default is pinned', '/pin', 'up-b', 'b/client'],
    ['a fallback of a rule\'s model is pinned', '/pin', 'c', 'c/client'],
    ['an escalate target of the default is pinned', '/pin', 'd', 'd/client'],
    ['a budget\'s downgrade is pinned', '/pin', 'e', 'e/client'],
    ['llm_router_pin NAME widens to it', '/wide', 'claude', 'claude/client'],
    ['and by its upstream name', '/wide', 'up-claude', 'claude/client'],
    ['the location\'s own models still pin', '/wide', 'a', 'a/client'],
    ['but only those named', '/wide', 'e', 'b/default'],
    ['and within the dialect', '/wide', 'sonnet', 'b/default'],
);

plan tests => @configs + 3 * @header_cases + 8 + @pin_cases + 2 + 1;

for my $c (@configs) {
    my ($name, $conf, $want) = @$c;
    my $got = emerg($conf);
    if (ref $want) {
        like $got, $want, $name;
    } else {
        is $got, $want, $name;
    }
}

$t->config($running)->run;

for my $c (@header_cases) {
    my ($name, $path, $gone, $kept) = @$c;
    my $r = $t->chat(path => $path, body => { model => 'auto', messages => [user('hi')] },
                     headers => [@identity, @kept]);
    is $r->{status}, 200, "$name: status";
    my $h = $t->capture('keyed')->{headers};
    is_deeply [grep { $h->{$_} } @$gone], [], "$name: none of the removed reach the provider";
    is_deeply [grep { !$h->{$_} } @$kept], [], "$name: the others do";
}

# 8: a computed key with control characters: 500, nothing sent
{
    my $r = $t->chat(path => '/inj', body => { model => 'auto', messages => [user('hi')] },
                     headers => ['X-Tenant' => 'fine']);
    is $r->{status}, 200, 'computed key: status';
    is $t->capture('inj')->{headers}{authorization}[0], 'Bearer sk-fine', 'computed key sent';
    my $before = () = $t->requests('inj');

    # "evil" last: the capture is of the last request the mock received
    for my $tenant (qw(ctl evil)) {
        $r = $t->chat(path => '/inj', body => { model => 'auto', messages => [user('hi')] },
                      headers => ['X-Tenant' => $tenant]);
        is $r->{status}, 500, "computed key with control characters ($tenant): 500";
    }

    my $after = () = $t->requests('inj');
    is $after, $before, 'computed key with control characters: nothing sent';
    unlike $t->capture('inj')->{head}, qr/X-Injected/i, 'no injected header upstream';
    like $t->error_log, qr/\[error\].*llm_router: the key of model "inj" has control characters/,
         'computed key with control characters: logged';
    unlike $t->error_log, qr/sk-x|sk-\tx/, 'the key is not logged';
}

for my $c (@pin_cases) {
    my ($name, $path, $model, $want) = @$c;
    my $r = $t->chat(path => $path, body => { model => $model, messages => [user('hi')] });
    is route_of($r), $want, $name;
}

# 12: docs
{
    my %vars;
    for my $f (glob("$LLMRouterTest::REPO/docs/*.md"), "$LLMRouterTest::REPO/README.md",
               glob("$LLMRouterTest::REPO/examples/*.conf")) {
        $vars{$_} = 1 for LLMRouterTest::slurp($f) =~ /\$(llm_router_[a-z_]*[a-z])/g;
    }
    my $t2 = LLMRouterTest->new;
    my $set = join ' ', map { "\$$_" } sort keys %vars;
    my ($ok, $out) = $t2->config(<<"EOF")->nginx_test;
log_format vars '$set';
EOF
    ok $ok, 'every $llm_router_ variable of the docs exists' or diag $out;

    my $doc = LLMRouterTest::slurp("$LLMRouterTest::REPO/docs/directives.md");
    my @warned = grep { /debug log/i }
                 map { ($doc =~ /^#### $_\n(.*?)^#/ms)[0] // '' } qw(key key_file);
    is scalar @warned, 2, 'key and key_file warn that the debug log shows keys';
    $t2->stop;
}

$t->stop;
