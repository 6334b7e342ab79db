%% Erlang/OTP diameter as a Credit-Control client of the server under test.
%%
%% cc_client:main([Port, Sessions]) connects over TCP, waits for the capabilities exchange,
%% then runs Sessions Credit-Control sessions (CCR-I, CCR-U, CCR-T each) and prints one line
%% per answer: "CCA <session> <type> result=<Result-Code> gsu=<Granted-Service-Unit>".
%% It prints "DONE" and halts with status 0, or halts non-zero on any failure.
-module(cc_client).

-export([main/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3, prepare_retransmit/3,
         handle_answer/4, handle_error/4, handle_request/3]).

-define(SVC, cc_test_client).

main([PortArg, SessionsArg]) ->
    Port = list_to_integer(PortArg),
    Sessions = list_to_integer(SessionsArg),
    ok = diameter:start(),
    ok = diameter:start_service(?SVC, service()),
    true = diameter:subscribe(?SVC),
    {ok, _} = diameter:add_transport(?SVC, {connect, transport(Port)}),
    wait_up(),
    lists:foreach(fun run_session/1, lists:seq(1, Sessions)),
    io:format("DONE~n"),
    halt(0).

service() ->
    [{'Origin-Host', "erl.test"},
     {'Origin-Realm', "test"},
     {'Vendor-Id', 0},
     {'Product-Name', "erlang-cc-client"},
     {'Auth-Application-Id', [4]},
     {decode_format, map},
     {application, [{alias, cc}, {dictionary, cc_rfc4006}, {module, ?MODULE},
                    {answer_errors, callback}]}].

transport(Port) ->
    [{transport_module, diameter_tcp},
     {transport_config, [{raddr, {127,0,0,1}}, {rport, Port}, {ip, {127,0,0,1}}]},
     {watchdog_timer, 6000},
     {connect_timer, 2000}].

wait_up() ->
    receive
        {diameter_event, ?SVC, Info} when element(1, Info) == up ->
            io:format("UP~n");
        {diameter_event, ?SVC, _Other} ->
            wait_up()
    after 15000 ->
        io:format("NO_UP~n"),
        halt(2)
    end.

run_session(N) ->
    Sid = "erl.test;" ++ integer_to_list(N),
    call(Sid, 1, 0, [{'Requested-Service-Unit', [[{'CC-Time', [60]}]]}]),
    call(Sid, 2, 1, [{'Used-Service-Unit', [[{'CC-Time', [60]}]]},
                     {'Requested-Service-Unit', [[{'CC-Time', [60]}]]}]),
    call(Sid, 3, 2, [{'Used-Service-Unit', [[{'CC-Time', [30]}]]}]).

call(Sid, Type, Number, Extra) ->
    Req = ['CCR', {'Session-Id', Sid},
           {'Origin-Host', "erl.test"}, {'Origin-Realm', "test"},
           {'Destination-Realm', "test"}, {'Auth-Application-Id', 4},
           {'Service-Context-Id', "32251@3gpp.org"},
           {'CC-Request-Type', Type}, {'CC-Request-Number', Number} | Extra],
    case diameter:call(?SVC, cc, Req, []) of
        {ok, ['CCA' | Map]} when is_map(Map) ->
            io:format("CCA ~s ~w result=~w gsu=~w~n",
                      [Sid, Type, maps:get('Result-Code', Map, none),
                       maps:get('Granted-Service-Unit', Map, none)]);
        Other ->
            io:format("FAILED ~s ~p ~p~n", [Sid, Type, Other]),
            halt(3)
    end.

%% diameter_app callbacks (RFC 6733 client side; the server never sends us requests).
peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _Remote, _Svc, _State) -> {ok, Peer};
pick_peer([], [Peer | _], _Svc, _State) -> {ok, Peer};
pick_peer([], [], _Svc, _State) -> false.
prepare_request(Packet, _Svc, _Peer) -> {send, Packet}.
prepare_retransmit(Packet, _Svc, _Peer) -> {send, Packet}.
handle_answer(Packet, _Request, _Svc, _Peer) -> {ok, element(4, Packet)}.
handle_error(Reason, _Request, _Svc, _Peer) -> {error, Reason}.
handle_request(_Packet, _Svc, _Peer) -> discard.
