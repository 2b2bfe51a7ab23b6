#!/usr/bin/perl
# The provider's key is set on the request to the provider alone: no
# variable, add_header or log_format of the location sees it, whether
# the answer comes from the model, a fallback, an error page, or the
# client leaves before it.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep);
use LLMRouterTest qw(route_of);

plan tests => 9;

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini-secret');
$t->mock('claude', key => 'sk-ant-secret', auth => 'x-api-key');
$t->mock('azure', key => 'az-secret', auth => 'api-key');
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%; model gpt-4o-mini; key sk-mini-secret; }
llm_router_model down  { url http://127.0.0.1:1/v1/chat/completions; key sk-down-secret;
                         fallback azure; }
llm_router_model azure { url %%URL_azure%%; model gpt-4o; key az-secret; auth api-key; }
llm_router_model haiku { api messages; model claude-haiku-4-5; key sk-ant-secret;
                         url http://127.0.0.1:%%PORT_claude%%/v1/messages; }

log_format seen '$http_authorization|$http_x_api_key|$http_api_key';

server {
    listen 127.0.0.1:%%PORT%%;
    access_log %%PREFIX%%/seen.log seen;
    add_header X-Seen "$http_authorization|$http_x_api_key|$http_api_key" always;
    proxy_read_timeout 5s;

    location = /v1/chat/completions {
        llm_router on;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
    location = /fallback/v1/chat/completions {
        llm_router on;
        llm_router_default down;
        proxy_pass $llm_router_url;
    }
    location = /gone/v1/chat/completions {
        llm_router on;
        llm_router_default down;
        llm_router_fallback_status 400;
        proxy_pass $llm_router_url;
    }
    location = /v1/messages {
        llm_router on;
        llm_router_default haiku;
        proxy_pass $llm_router_url;
    }
}
EOF

my @client = (Authorization => 'Bearer client', 'x-api-key' => 'client', 'api-key' => 'client');

my $r = $t->chat(body => { model => 'auto', messages => [{ role => 'user', content => 'hi' }] }, headers => [@client]);
is_deeply [$r->{status}, $r->{headers}{'x-seen'}], [200, '||'], 'chat: the key reached the provider, no variable sees it';

$r = $t->http(method => 'POST', path => '/v1/messages', headers => ['Content-Type' => 'application/json', @client],
              body => '{"model":"x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}');
is_deeply [$r->{status}, $r->{headers}{'x-seen'}], [200, '||'], 'messages: x-api-key neither';

$r = $t->chat(path => '/fallback/v1/chat/completions', headers => [@client],
              body => { model => 'auto', messages => [{ role => 'user', content => 'hi' }] });
is_deeply [$r->{status}, $r->{headers}{'x-seen'}, $r->{headers}{'x-mock-provider'}], [200, '||', 'azure'],
          'fallback: the key of the model that answered is hidden too';

$r = $t->chat(path => '/gone/v1/chat/completions', headers => [@client],
              body => { model => 'auto', messages => [{ role => 'user', content => 'hi' }] });
is_deeply [$r->{status}, $r->{headers}{'x-seen'}], [502, '||'], 'an unreachable provider: the error page neither';

# the client leaves before the answer: the log still sees no key
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or die;
my $body = '{"model":"auto","messages":[{"role":"user","content":"hi"}]}';
print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       . "X-Mock-Delay-Ms: 1500\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
sleep 0.5;
close $s;

my @lines = $t->access_log_records('seen.log', 5);
is scalar(@lines), 5, 'five requests logged';
is_deeply [map { $_->{_invalid} } @lines], [('-|-|-') x 5], 'the log sees no key, nor the client\'s';
my $log = $t->read_file('seen.log');
unlike $log, qr/secret/, 'no secret in the access log';

like $t->error_log, qr/client prematurely closed|499|client closed/i, '(the client did leave)';

$t->stop;
