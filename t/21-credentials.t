#!/usr/bin/perl
# Credentials: the client's Authorization / X-Api-Key / Api-Key never reach
# a provider; the chosen model's own credential does, in its own header.
# No key shows up in the logs.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(user);

my %keys = (bearer => 'sk-bearer-123', xkey => 'sk-xkey-456', akey => 'sk-akey-789',
            var => 'sk-var-acme', file => 'sk-file-000');

my $t = LLMRouterTest->new;
$t->mock('bearer', key => $keys{bearer});
$t->mock('xkey', key => $keys{xkey}, auth => 'x-api-key');
$t->mock('akey', key => $keys{akey}, auth => 'api-key');
$t->mock('var', key => $keys{var});
$t->mock('file', key => $keys{file});
$t->mock('open');
$t->write_file('file.key', "  $keys{file} \n\n", 0600);

$t->config(<<'EOF')->run;
map $http_x_tenant $tenant_key {
    default  sk-var-default;
    acme     sk-var-acme;
}

llm_router_model bearer { url %%URL_bearer%%; model m-bearer; auth bearer;    key sk-bearer-123; }
llm_router_model xkey   { url %%URL_xkey%%;   model m-xkey;   auth x-api-key; key sk-xkey-456; }
llm_router_model akey   { url %%URL_akey%%;   model m-akey;   auth api-key;   key sk-akey-789; }
llm_router_model var    { url %%URL_var%%;    model m-var;    key $tenant_key; }
llm_router_model file   { url %%URL_file%%;   model m-file;   key_file %%PREFIX%%/file.key; }
llm_router_model open   { url %%URL_open%%;   model m-open;   auth none; }
llm_router_model dead   { url http://127.0.0.1:1/v1/chat/completions; model m-dead; key sk-dead-999; }

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default open;
        llm_router_pin bearer xkey akey var file dead;    # by the client
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass $llm_router_url;
    }
}
EOF

my @client_creds = (Authorization => 'Bearer client-secret-1', 'X-Api-Key' => 'client-secret-2',
                    'Api-Key' => 'client-secret-3');
# (nginx itself rejects a repeated Authorization, so only the others repeat)
my @shouting = (AUTHORIZATION => 'Bearer client-secret-4', 'x-API-KEY' => 'client-secret-5',
                'API-key' => 'client-secret-6', 'X-API-KEY' => 'client-secret-7',
                'api-KEY' => 'client-secret-8');

# [name, model, client headers, expected status, credential headers at the mock]
my @cases = (
    ['bearer', 'bearer', \@client_creds, 200, { authorization => "Bearer $keys{bearer}" }],
    ['x-api-key', 'xkey', \@client_creds, 200, { 'x-api-key' => $keys{xkey} }],
    ['api-key', 'akey', \@client_creds, 200, { 'api-key' => $keys{akey} }],
    ['key from a variable', 'var', [@client_creds, 'X-Tenant' => 'acme'], 200,
     { authorization => "Bearer $keys{var}" }],
    ['key variable is evaluated per request', 'var', ['X-Tenant' => 'other'], 401,
     { authorization => 'Bearer sk-var-default' }],
    ['key from key_file, trimmed', 'file', \@client_creds, 200,
     { authorization => "Bearer $keys{file}" }],
    ['auth none sends nothing', 'open', \@client_creds, 200, {}],
    ['any header case, repeated headers (bearer)', 'bearer', \@shouting, 200,
     { authorization => "Bearer $keys{bearer}" }],
    ['any header case, repeated headers (none)', 'open', \@shouting, 200, {}],
);

plan tests => 3 * @cases + 4 + 1;

for my $c (@cases) {
    my ($name, $model, $headers, $status, $want) = @$c;
    my $r = $t->chat(body => { model => $model, messages => [user('hi')] },
                     headers => $headers);
    is $r->{status}, $status, "$name: status";

    my $cap = $t->capture($model);
    my %got = map { $_ => join ' | ', @{ $cap->{headers}{$_} } }
              grep { $cap->{headers}{$_} } qw(authorization x-api-key api-key);
    is_deeply \%got, $want, "$name: credential headers at the provider";
    unlike $cap->{head}, qr/client-secret/, "$name: no client credential upstream";
}

# a failing upstream makes nginx log the request
my $r = $t->chat(body => { model => 'dead', messages => [user('hi')] },
                 headers => \@client_creds);
is $r->{status}, 502, 'unreachable provider: 502';

my $secrets = join '|', map { quotemeta } values %keys, 'sk-var-default', 'sk-dead-999', 'client-secret';
$t->access_log_records('llm.log', @cases + 1);
unlike $t->error_log, qr/$secrets/, 'no key in error.log';
unlike $t->read_file('llm.log'), qr/$secrets/, 'no key in the access log';
unlike $r->{body}, qr/$secrets/, 'no key in the error answer';

$t->stop;
