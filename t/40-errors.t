#!/usr/bin/perl
# Bad requests: each gets its status and an OpenAI-style JSON error, and
# nothing reaches the provider.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(words json_encode);

my $t = LLMRouterTest->new;
$t->mock('mini');
$t->config(<<'EOF')->run;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; auth none; }

server {
    listen 127.0.0.1:%%PORT%%;
    client_max_body_size 1k;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }

    location = /norule {
        llm_router on;
        llm_router_rule never $http_x_never=1 mini;
        proxy_pass $llm_router_url;
    }
}
EOF

my $msgs = '"messages":[{"role":"user","content":"hi"}]';
my $deep = '{' . $msgs . ',"x":' . ('[' x 100) . (']' x 100) . '}';
my $not_deep = '{' . $msgs . ',"x":' . ('[' x 30) . (']' x 30) . '}';
my $big = json_encode({ messages => [{ role => 'user', content => words(400) }] });

# [name, body, status, error type, request options]
my @cases = (
    ['invalid JSON', '{"model":"auto",', 400],
    ['not JSON', 'hello there', 400],
    ['trailing garbage', qq({$msgs} x), 400],
    ['invalid UTF-8', qq({"messages":[{"role":"user","content":"caf\xe9 \xff"}]}), 400],
    ['body is an array', qq([{$msgs}]), 400],
    ['body is a string', '"hi"', 400],
    ['body is a number', '42', 400],
    ['body is null', 'null', 400],
    ['messages missing', '{"model":"auto"}', 400],
    ['messages is a string', '{"messages":"hi"}', 400],
    ['messages is an object', '{"messages":{"role":"user","content":"hi"}}', 400],
    ['messages is empty', '{"messages":[]}', 400],
    ['a message is a string', '{"messages":["hi"]}', 400],
    ['a later message is a number', '{"messages":[{"role":"user","content":"hi"},3]}', 400],
    ['model is a number', qq({"model":42,$msgs}), 400],
    ['model is an object', qq({"model":{"name":"auto"},$msgs}), 400],
    ['model is an array', qq({"model":["auto"],$msgs}), 400],
    ['stream is a string', qq({"stream":"yes",$msgs}), 400],
    ['stream is a number', qq({"stream":1,$msgs}), 400],
    ['duplicate model key', qq({"model":"auto","model":"mini",$msgs}), 400],
    ['empty body', '', 400],
    ['no body', undef, 400],
    ['nested deeper than 64', $deep, 400],
    ['larger than client_max_body_size', $big, 413],
    ['larger than client_max_body_size, chunked', $big, 413, chunked => [100, 100]],
    ['no rule matches and no default', qq({$msgs}), 500, path => '/norule'],
);

plan tests => 2 * @cases + 4 + 1;

sub sent { scalar(() = $t->requests('mini')) }

for my $c (@cases) {
    my ($name, $body, $status, %opts) = @$c;
    my $before = sent();
    my $r = $t->chat(body => $body, %opts);
    my $type = $status == 500 ? 'server_error' : 'invalid_request_error';
    my $e = ref $r->{json} eq 'HASH' && $r->{json}{error};
    my %got = (status => $r->{status},
               content_type => ($r->{headers}{'content-type'} // '') =~ s/\s*;.*//r,
               error => ref $e eq 'HASH' ? { %$e, message => message_ok($e->{message}) } : $r->{body});
    is_deeply \%got, { status => $status, content_type => 'application/json',
                       error => { message => 'a message', type => $type, param => undef, code => undef } },
              "$name: $status with a JSON error";
    is sent(), $before, "$name: nothing sent to the provider";
}

like $t->error_log, qr/\[(?:error|warn)\][^\n]*(?:rule|default)/,
     'no rule and no default is logged';

# controls: the same location passes good requests through
my $before = sent();
my $r = $t->chat(body => $not_deep);
is_deeply [$r->{status}, sent()], [200, $before + 1],
          'nesting of 31 levels is fine';
$r = $t->chat(body => qq({"model":"auto","stream":false,$msgs}));
is $r->{status}, 200, 'stream false is fine';
$r = $t->chat(body => qq({"model":null,$msgs}));
is $r->{status}, 200, 'model null is routed like an absent model';

$t->stop;

sub message_ok {
    my ($m) = @_;
    return defined $m && !ref $m && length $m ? 'a message' : $m;
}
