#!/usr/bin/perl
# Bad requests: each gets its status and an OpenAI-style JSON error (with
# the documented message), and nothing reaches the provider.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(words json_encode);

my $t = LLMRouterTest->new;
$t->mock('mini');
$t->config(<<'EOF')->run;
llm_router_model mini    { url %%URL_mini%%; model gpt-4o-mini; auth none; }
llm_router_model keyless { url %%URL_mini%%; model keyless; key $http_x_key; }
llm_router_model dead    { url http://127.0.0.1:1/v1/chat/completions; model dead; auth none; }

server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 1k;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        llm_router_pin keyless dead;
        proxy_pass $llm_router_url;
    }

    location = /denied {
        llm_router on;
        llm_router_default mini;
        deny all;
        proxy_pass $llm_router_url;
    }
}
EOF

my $msgs = '"messages":[{"role":"user","content":"hi"}]';
my $deep = '{' . $msgs . ',"x":' . ('[' x 100) . (']' x 100) . '}';
my $not_deep = '{' . $msgs . ',"x":' . ('[' x 30) . (']' x 30) . '}';
my $big = json_encode({ messages => [{ role => 'user', content => words(400) }] });

my $not_json = qr/^request body is not valid JSON \(at byte \d+\): \S/;
my $messages_type = qr/^invalid type for 'messages': expected an array of objects$/;

# [name, body, status, message, request options]
my @cases = (
    ['invalid JSON', '{"model":"auto",', 400, $not_json],
    ['not JSON', 'hello there', 400, $not_json],
    ['trailing garbage', qq({$msgs} x), 400, $not_json],
    ['invalid UTF-8', qq({"messages":[{"role":"user","content":"caf\xe9 \xff"}]}), 400,
     qr/^request body is not valid UTF-8 \(at byte \d+\)$/],
    ['body is an array', qq([{$msgs}]), 400, qr/^request body must be a JSON object$/],
    ['body is a string', '"hi"', 400, qr/^request body must be a JSON object$/],
    ['body is a number', '42', 400, qr/^request body must be a JSON object$/],
    ['body is null', 'null', 400, qr/^request body must be a JSON object$/],
    ['messages missing', '{"model":"auto"}', 400, qr/^missing required parameter: 'messages'$/],
    ['messages is a string', '{"messages":"hi"}', 400, $messages_type],
    ['messages is an object', '{"messages":{"role":"user","content":"hi"}}', 400, $messages_type],
    ['messages is empty', '{"messages":[]}', 400, qr/^'messages' must be a non-empty array$/],
    ['a message is a string', '{"messages":["hi"]}', 400, $messages_type],
    ['a later message is a number', '{"messages":[{"role":"user","content":"hi"},3]}', 400,
     $messages_type],
    map({ [$_->[0], qq({"model":$_->[1],$msgs}), 400,
           qr/^invalid type for 'model': expected a string$/] }
        ['model is a number', 42], ['model is an object', '{"name":"auto"}'],
        ['model is an array', '["auto"]'], ['model is true', 'true']),
    map({ [$_->[0], qq({"stream":$_->[1],$msgs}), 400,
           qr/^invalid type for 'stream': expected a boolean$/] }
        ['stream is a string', '"yes"'], ['stream is a number', 1]),
    ['duplicate model key', qq({"model":"auto","model":"mini",$msgs}), 400,
     qr/^duplicate key 'model' in request body$/],
    ['duplicate messages key', qq({$msgs,$msgs}), 400, qr/^duplicate key 'messages' in request body$/],
    ['empty body', '', 400, qr/^request body is empty$/],
    ['no body', undef, 400, qr/^request body is empty$/],
    ['nested deeper than 64', $deep, 400, qr/^request body is nested too deeply$/],
    ['larger than client_max_body_size', $big, 413,
     qr/^the request body is larger than client_max_body_size$/],
    ['larger than client_max_body_size, chunked', $big, 413,
     qr/^the request body is larger than client_max_body_size$/, chunked => [100, 100]],
    ['the model key is empty', qq({"model":"keyless",$msgs}), 500,
     qr/^the model has no credentials$/],
    ['nginx errors are JSON too (deny)', qq({$msgs}), 403, qr/^forbidden$/, path => '/denied'],
    ['unreachable provider', qq({"model":"dead",$msgs}), 502,
     qr/^the model provider could not be reached$/],
);

plan tests => 2 * @cases + 1 + 4 + 1;

sub sent { scalar(() = $t->requests('mini')) }

for my $c (@cases) {
    my ($name, $body, $status, $message, %opts) = @$c;
    my $before = sent();
    my $r = $t->chat(body => $body, %opts);
    my $type = $status >= 500 ? 'server_error' : 'invalid_request_error';
    my $e = ref $r->{json} eq 'HASH' && $r->{json}{error};
    my %got = (status => $r->{status},
               content_type => ($r->{headers}{'content-type'} // '') =~ s/\s*;.*//r,
               error => ref $e eq 'HASH' ? { %$e, message => matches($e->{message}, $message) }
                                         : $r->{body});
    is_deeply \%got, { status => $status, content_type => 'application/json',
                       error => { message => 'as documented', type => $type,
                                  param => undef, code => undef } },
              "$name: $status with a JSON error";
    is sent(), $before, "$name: nothing sent to the provider";
}

# (a location with rules and no default fails nginx -t: t/98-config-hardening.t)
my $log = $t->error_log;
like $log, qr/\[error\][^\n]*llm_router: the key of model "keyless" is empty/, 'empty key is logged';

# controls: the same location passes good requests through
my $before = sent();
my $r = $t->chat(body => $not_deep);
is_deeply [$r->{status}, sent()], [200, $before + 1], 'nesting of 31 levels is fine';
$r = $t->chat(body => qq({"model":"auto","stream":false,$msgs}));
is $r->{status}, 200, 'stream false is fine';
$r = $t->chat(body => qq({"model":null,$msgs}));
is $r->{status}, 200, 'model null is routed like an absent model';
$r = $t->chat(body => qq({"model":"keyless",$msgs}), headers => { 'X-Key' => 'sk-1' });
is $r->{status}, 200, 'the same model with a key is fine';

$t->stop;

# 'as documented' when the message matches, else the message itself
sub matches {
    my ($m, $re) = @_;
    return defined $m && !ref $m && $m =~ $re ? 'as documented' : $m;
}
