var player = createSprite(200, 380);
player.setAnimation("runner");
player.scale = 0.5;
var hurdle = createSprite(450, 380);
hurdle.setAnimation("hurdle");
hurdle.velocityX = -4;

function draw() {
  background("lightyellow");
  player.velocityY = player.velocityY + 0.8;
  if (player.y > 380) {
    player.y = 380;
    player.velocityY = 0;
  }
  if (keyDown("space") && player.y >= 380) {
    player.velocityY = -12;
  }
  if (keyDown("right")) { player.x = player.x + 2; }
  if (hurdle.x < -30 || player.isTouching(hurdle)) { hurdle.x = 450; }
  drawSprites();
}
